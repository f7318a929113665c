package capture

// The return path of connections the agent makes from a client's address. To show the application the real client,
// the agent connects to it from that address (IP_TRANSPARENT: TransparentControl). The application's replies are
// addressed to the client, a remote address, so the routing table would send them out of the host; ReturnPath
// routes them to the agent instead. The capture table marks the replies (from the connection's mark, which the
// agent's transparent socket set); one policy rule per family sends marked packets to a table of our own, whose
// only route delivers every address locally, where the agent's socket takes them. Nothing else is touched: an
// unmarked packet never matches the rule.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ambient-agent/ambient-agent/nft"
	"github.com/ambient-agent/ambient-agent/ports"
)

// ReturnPath is the policy routing of the return path: packets this host sends (iif lo) whose mark, under Mask, is
// Mark are looked up in Table (IPv4, and IPv6 where the host has it: IPv6Usable), whose route delivers them
// locally. The rules carry Priority. Table is ours alone: every rule that looks it up is p's.
type ReturnPath struct {
	Mark, Mask uint32
	Table      int
	Priority   int
}

// AgentReturnPath is the agent's, for its capture mark (0: ports.Mark): its transparent sockets carry the capture
// mark and ports.ReturnMark, and the rule asks for all of those bits, so that other software's marks that happen to
// share one of them (a full 32-bit value) are not taken for the agent's. Its table and rule priority are in package
// ports.
func AgentReturnPath(mark uint32) ReturnPath {
	if mark == 0 {
		mark = ports.Mark
	}
	m := mark | ports.ReturnMark
	return ReturnPath{Mark: m, Mask: m, Table: ports.ReturnTable, Priority: ports.ReturnRulePriority}
}

// ReturnZone is the zone table of the agent's transparent sockets, which carry mark (nft.InstallZone): their
// connections are never taken for one of a client's own. The table is owned by the caller's process, and goes
// with it or with Close.
func ReturnZone(mark uint32, opts ...Option) (*nft.OwnedTable, error) {
	rs, err := nft.RenderZone(mark)
	if err != nil {
		return nil, err
	}
	return nft.InstallZone(rs, New(opts...).netns)
}

// IPv6Usable reports whether this network namespace has IPv6 on its loopback interface, where the return path's
// IPv6 route goes: not on a kernel booted with ipv6.disable=1, nor with IPv6 disabled on lo (disable_ipv6). There,
// IPv6 clients' addresses cannot be used, and the return path has IPv4 only.
func IPv6Usable() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
	return err == nil && strings.TrimSpace(string(b)) == "0"
}

// families are the address families the return path covers here.
func families() []int {
	if IPv6Usable() {
		return []int{unix.AF_INET, unix.AF_INET6}
	}
	return []int{unix.AF_INET}
}

// Install puts the rules and routes in place, replacing a previous install of the same ReturnPath. On error it
// removes what it added: the host is left as it was.
func (p ReturnPath) Install() error {
	if err := p.check(); err != nil {
		return err
	}
	for _, f := range families() {
		if err := p.install(f); err != nil {
			return errors.Join(err, p.Remove())
		}
	}
	return nil
}

func (p ReturnPath) install(family int) error {
	if err := netlink.RouteReplace(p.route(family)); err != nil {
		return fmt.Errorf("capture: return path: route in table %d (%s): %w", p.Table, familyName(family), err)
	}
	if err := p.removeRules(family); err != nil { // one rule, however many installs
		return err
	}
	if err := netlink.RuleAdd(p.rule(family)); err != nil {
		return fmt.Errorf("capture: return path: rule fwmark 0x%x/0x%x (%s): %w", p.Mark, p.Mask, familyName(family), err)
	}
	return nil
}

// Remove deletes the rules and routes of p (every rule that looks up its table, whatever their mark: those of an
// agent with another capture mark too); what is not there is not an error.
func (p ReturnPath) Remove() error {
	var errs []error
	for _, f := range families() {
		errs = append(errs, p.removeRules(f))
		if err := netlink.RouteDel(p.route(f)); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("capture: return path: delete route of table %d (%s): %w", p.Table, familyName(f), err))
		}
	}
	return errors.Join(errs...)
}

// Installed reports whether every family the return path covers here has p's rule and the route.
func (p ReturnPath) Installed() (bool, error) {
	for _, f := range families() {
		rules, err := p.rules(f)
		if err != nil || !slices.ContainsFunc(rules, p.same) {
			return false, err
		}
		routes, err := netlink.RouteListFiltered(f, p.route(f), netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE)
		if err != nil || len(routes) == 0 {
			return false, err
		}
	}
	return true, nil
}

func (p ReturnPath) check() error {
	switch {
	case p.Mark == 0 || p.Mark&p.Mask != p.Mark:
		return fmt.Errorf("capture: return path: mark 0x%x is zero or outside its mask 0x%x", p.Mark, p.Mask)
	case p.Table <= 0 || p.Table == unix.RT_TABLE_MAIN || p.Table == unix.RT_TABLE_LOCAL || p.Table == unix.RT_TABLE_DEFAULT:
		return fmt.Errorf("capture: return path: table %d is not a table of our own", p.Table)
	case p.Priority <= 0:
		return fmt.Errorf("capture: return path: rule priority %d is not positive", p.Priority)
	}
	return nil
}

// route is the one route of the table: every address of the family, delivered locally.
func (p ReturnPath) route(family int) *netlink.Route {
	return &netlink.Route{Family: family, Table: p.Table, Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST,
		LinkIndex: loopbackIndex, Dst: defaultRoute(family), Protocol: unix.RTPROT_STATIC}
}

// loopbackIndex is lo's interface index, the same in every network namespace.
const loopbackIndex = 1

func defaultRoute(family int) *net.IPNet {
	if family == unix.AF_INET6 {
		return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
}

// rule is p's rule: packets of this host (iif lo: never forwarded ones) with the mark.
func (p ReturnPath) rule(family int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family, r.Mark, r.Table, r.Priority, r.IifName = family, p.Mark, p.Table, p.Priority, "lo"
	mask := p.Mask
	r.Mask = &mask
	return r
}

// same reports whether r is p's rule as Install adds it.
func (p ReturnPath) same(r netlink.Rule) bool {
	return r.Mark == p.Mark && r.Mask != nil && *r.Mask == p.Mask && r.Priority == p.Priority && r.IifName == "lo"
}

// rules are the rules of the family that look up p's table.
func (p ReturnPath) rules(family int) ([]netlink.Rule, error) {
	all, err := netlink.RuleList(family)
	if err != nil {
		return nil, fmt.Errorf("capture: return path: list rules (%s): %w", familyName(family), err)
	}
	return slices.DeleteFunc(all, func(r netlink.Rule) bool { return r.Table != p.Table }), nil
}

func (p ReturnPath) removeRules(family int) error {
	rules, err := p.rules(family)
	if err != nil {
		return err
	}
	for i := range rules {
		if err := netlink.RuleDel(&rules[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("capture: return path: delete rule (%s): %w", familyName(family), err)
		}
	}
	return nil
}

func familyName(family int) string {
	if family == unix.AF_INET6 {
		return "IPv6"
	}
	return "IPv4"
}
