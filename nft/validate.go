package nft

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// normalized is a Spec with defaults resolved, addresses split by family, and every
// list sorted and deduplicated: the only input the rule builders see.
type normalized struct {
	outbound, inbound         bool
	mark                      uint32
	outboundPort, inboundPort uint16

	workloads4, workloads6     []netip.Addr
	inboundExcludedPorts       []uint16
	outboundExcludedPorts      []uint16
	excluded4, excluded6       []netip.Prefix
	excludedUIDs, excludedGIDs []uint32
}

// normalize validates s and resolves it. Every problem is reported, each naming
// the field it is about.
func normalize(s Spec) (normalized, error) {
	n := normalized{
		outbound:     s.Outbound,
		inbound:      s.Inbound,
		mark:         cmp.Or(s.Mark, DefaultMark),
		outboundPort: cmp.Or(s.OutboundPort, DefaultOutboundPort),
		inboundPort:  cmp.Or(s.InboundPort, DefaultInboundPort),
	}
	var errs []error
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
	for i, p := range s.ExcludedCIDRs {
		switch {
		case !p.IsValid():
			errs = append(errs, fmt.Errorf("ExcludedCIDRs[%d]: not a valid prefix", i))
		case p.Addr().Is4In6():
			errs = append(errs, fmt.Errorf("ExcludedCIDRs[%d]: %s is IPv4-mapped; write the IPv4 prefix", i, p))
		case p.Addr().Is4():
			n.excluded4 = append(n.excluded4, p.Masked())
		default:
			n.excluded6 = append(n.excluded6, p.Masked())
		}
	}
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
	n.excludedUIDs = sortedUnique(s.ExcludedUIDs)
	n.excludedGIDs = sortedUnique(s.ExcludedGIDs)
	if len(errs) > 0 {
		return normalized{}, fmt.Errorf("nft: invalid spec: %w", errors.Join(errs...))
	}
	return n, nil
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
