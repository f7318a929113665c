package nft

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	agentports "github.com/ambient-agent/ambient-agent/ports"
)

// normalized is a Spec with defaults resolved, addresses split by family, and every
// list sorted and deduplicated: the only input the rule builders see.
type normalized struct {
	outbound, inbound         bool
	mark                      uint32
	returnMark                uint32 // 0: no return path
	outboundPort, inboundPort uint16

	workloads4, workloads6     []netip.Addr
	allLocal                   bool
	leftOut4, leftOut6         []netip.Prefix
	inboundExcludedPorts       []uint16
	outboundExcludedPorts      []uint16
	excluded4, excluded6       []netip.Prefix
	excludedUIDs, excludedGIDs []uint32

	classes         []outboundClass
	unmatchedBypass bool
	sameHost        bool

	// guardedPorts are the ports the table redirects to, when GuardListeners
	// asks for them to be guarded; empty otherwise.
	guardedPorts []uint16
}

// outboundClass is an OutboundClass checked, its lists sorted and deduplicated.
type outboundClass struct {
	name       string
	port       uint16
	uids, gids []uint32
	cgroups    []CgroupMatch
}

// normalize validates s and resolves it. Every problem is reported, each naming
// the field it is about.
func normalize(s Spec) (normalized, error) {
	n := normalized{
		outbound:     s.Outbound,
		inbound:      s.Inbound,
		mark:         cmp.Or(s.Mark, DefaultMark),
		returnMark:   s.ReturnMark,
		outboundPort: cmp.Or(s.OutboundPort, DefaultOutboundPort),
		inboundPort:  cmp.Or(s.InboundPort, DefaultInboundPort),

		unmatchedBypass: s.UnmatchedBypass,
		sameHost:        s.SameHost,
	}
	var errs []error
	if s.SameHost && !(s.Inbound && s.Outbound) {
		errs = append(errs, errors.New("SameHost needs both Inbound and Outbound"))
	}
	if n.returnMark&n.mark != 0 {
		errs = append(errs, fmt.Errorf("ReturnMark 0x%x shares bits with Mark 0x%x", n.returnMark, n.mark))
	}
	if n.outboundPort == n.inboundPort {
		errs = append(errs, fmt.Errorf("OutboundPort and InboundPort are both %d", n.inboundPort))
	}
	for i, a := range s.Workloads {
		a, err := workloadAddr(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("Workloads[%d]: %w", i, err))
			continue
		}
		if a.Is4() {
			n.workloads4 = append(n.workloads4, a)
		} else {
			n.workloads6 = append(n.workloads6, a)
		}
	}
	n.excluded4, n.excluded6, errs = splitPrefixes("ExcludedCIDRs", s.ExcludedCIDRs, errs)
	n.allLocal = s.InboundAllLocal
	n.leftOut4, n.leftOut6, errs = splitPrefixes("InboundLeftOut", s.InboundLeftOut, errs)
	var err error
	if n.inboundExcludedPorts, err = ports(s.InboundExcludedPorts); err != nil {
		errs = append(errs, fmt.Errorf("InboundExcludedPorts: %w", err))
	}
	if n.outboundExcludedPorts, err = ports(s.OutboundExcludedPorts); err != nil {
		errs = append(errs, fmt.Errorf("OutboundExcludedPorts: %w", err))
	}
	n.workloads4 = sortedAddrs(n.workloads4)
	n.workloads6 = sortedAddrs(n.workloads6)
	n.excluded4 = outermost(n.excluded4)
	n.excluded6 = outermost(n.excluded6)
	n.leftOut4 = outermost(n.leftOut4)
	n.leftOut6 = outermost(n.leftOut6)
	n.excludedUIDs = sortedUnique(s.ExcludedUIDs)
	n.excludedGIDs = sortedUnique(s.ExcludedGIDs)
	var classErrs []error
	n.classes, classErrs = outboundClasses(s.OutboundClasses, n)
	errs = append(errs, classErrs...)
	if len(errs) > 0 {
		return normalized{}, fmt.Errorf("nft: invalid spec: %w", errors.Join(errs...))
	}
	if s.GuardListeners {
		n.guardedPorts = n.redirectPorts()
	}
	return n, nil
}

// splitPrefixes checks prefixes and splits them by family, masked; problems are
// added to errs, naming field.
func splitPrefixes(field string, in []netip.Prefix, errs []error) (v4, v6 []netip.Prefix, _ []error) {
	for i, p := range in {
		switch {
		case !p.IsValid():
			errs = append(errs, fmt.Errorf("%s[%d]: not a valid prefix", field, i))
		case p.Addr().Is4In6():
			errs = append(errs, fmt.Errorf("%s[%d]: %s is IPv4-mapped; write the IPv4 prefix", field, i, p))
		case p.Addr().Is4():
			v4 = append(v4, p.Masked())
		default:
			v6 = append(v6, p.Masked())
		}
	}
	return v4, v6, errs
}

// redirectPorts are the ports the rendered table redirects to, sorted: derived
// from the spec rather than listed in it, so that the guard cannot miss one.
func (n normalized) redirectPorts() []uint16 {
	var out []uint16
	if n.inbound {
		out = append(out, n.inboundPort)
	}
	if n.outbound {
		if !n.unmatchedBypass {
			out = append(out, n.outboundPort)
		}
		for _, c := range n.classes {
			out = append(out, c.port)
		}
	}
	return sortedUnique(out)
}

// hbonePort is the agent's HBONE listener (spec/hbone.md), which a class port must
// not take.
const hbonePort = agentports.HBONE

// maxClassName keeps the rule comment ("workload " + name) within the 128 bytes
// nft allows.
const maxClassName = 100

// outboundClasses checks the classes against each other and against the agent's
// own ports, and resolves them.
func outboundClasses(in []OutboundClass, n normalized) ([]outboundClass, []error) {
	reserved := map[uint16]string{
		n.outboundPort: "OutboundPort",
		n.inboundPort:  "InboundPort",
		hbonePort:      "the HBONE port",
		DefaultDNSPort: "the DNS proxy port",
	}
	var out []outboundClass
	var errs []error
	for i, c := range in {
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("OutboundClasses[%d]: %s", i, fmt.Sprintf(format, args...)))
		}
		if err := className(c.Name); err != nil {
			fail("Name: %v", err)
		}
		switch owner, taken := reserved[c.Port]; {
		case c.Port == 0:
			fail("Port 0")
		case taken:
			fail("Port %d is %s", c.Port, owner)
		default:
			reserved[c.Port] = fmt.Sprintf("the port of OutboundClasses[%d]", i)
		}
		if len(c.UIDs)+len(c.GIDs)+len(c.Cgroups) == 0 {
			fail("no UIDs, GIDs or Cgroups: it would match no process")
		}
		for j, g := range c.Cgroups {
			if err := cgroupMatch(g); err != nil {
				fail("Cgroups[%d]: %v", j, err)
			}
		}
		out = append(out, outboundClass{
			name:    c.Name,
			port:    c.Port,
			uids:    sortedUnique(c.UIDs),
			gids:    sortedUnique(c.GIDs),
			cgroups: sortedCgroups(c.Cgroups),
		})
	}
	return out, errs
}

// className checks that a class name fits a rule comment and prints the same in
// our text, which quotes comments the Go way, and in nft's, which does not escape.
func className(name string) error {
	switch {
	case name == "":
		return errors.New("empty")
	case len(name) > maxClassName:
		return fmt.Errorf("longer than %d bytes", maxClassName)
	case !utf8.ValidString(name) || strings.ContainsFunc(name, func(r rune) bool {
		return r == '"' || r == '\\' || !strconv.IsPrint(r)
	}):
		return fmt.Errorf("%q holds a quote, a backslash or an unprintable character", name)
	}
	return nil
}

// cgroupMatch checks g. Its path may hold backslashes: systemd escapes unit names
// with them (foo\x2dbar.service), and both nft and we print the path as is.
func cgroupMatch(g CgroupMatch) error {
	switch {
	case g.Level < 1 || g.Level > 255:
		// Level 0 is the root, which every process is in; the kernel takes at most 255.
		return fmt.Errorf("level %d, want 1 to 255", g.Level)
	case g.ID == 0:
		return errors.New("id 0")
	case strings.HasPrefix(g.Path, "/"):
		return fmt.Errorf("path %q is absolute, want it relative to /sys/fs/cgroup", g.Path)
	case !plainText(g.Path):
		return fmt.Errorf("path %q holds a quote or a control character", g.Path)
	}
	return nil
}

// plainText reports whether s is valid UTF-8 with no double quote or control
// character: text that nft can print between quotes as it is.
func plainText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool {
		return r == '"' || unicode.IsControl(r)
	})
}

func sortedCgroups(in []CgroupMatch) []CgroupMatch {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b CgroupMatch) int {
		return cmp.Or(cmp.Compare(a.Level, b.Level), cmp.Compare(a.ID, b.ID), strings.Compare(a.Path, b.Path))
	})
	return slices.Compact(out)
}

// workloadAddr checks that a can be a local workload's address, unmapping
// IPv4-mapped IPv6 addresses to IPv4.
func workloadAddr(a netip.Addr) (netip.Addr, error) {
	switch {
	case !a.IsValid():
		return a, errors.New("not a valid address")
	case a.Zone() != "":
		return a, fmt.Errorf("%s has a zone", a)
	}
	a = a.Unmap()
	switch {
	case a.IsUnspecified():
		return a, fmt.Errorf("%s is unspecified", a)
	case a.IsLoopback():
		return a, fmt.Errorf("%s is loopback, which is never captured", a)
	case a.IsMulticast():
		return a, fmt.Errorf("%s is multicast", a)
	}
	return a, nil
}

func ports(in []uint16) ([]uint16, error) {
	if slices.Contains(in, 0) {
		return nil, errors.New("port 0")
	}
	return sortedUnique(in), nil
}

func sortedUnique[T cmp.Ordered](in []T) []T {
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

func sortedAddrs(in []netip.Addr) []netip.Addr {
	slices.SortFunc(in, netip.Addr.Compare)
	return slices.Compact(in)
}

// outermost sorts prefixes of one family and drops those inside another one: the
// kernel refuses overlapping intervals in a set.
func outermost(in []netip.Prefix) []netip.Prefix {
	slices.SortFunc(in, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	var out []netip.Prefix
	for _, p := range in {
		if len(out) > 0 && out[len(out)-1].Contains(p.Addr()) {
			continue // sorted by address, then shorter first: p lies inside the last kept
		}
		out = append(out, p)
	}
	return out
}
