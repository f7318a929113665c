package nft

import (
	"fmt"

	"github.com/google/nftables"
)

// outboundChain hooks locally originated packets. Being a nat chain, it sees only
// the first packet of each connection; conntrack applies the verdict to the rest.
const outboundChain = "outbound"

// addOutbound adds the outbound sets and chain: every locally originated TCP
// connection is redirected to the agent's outbound port, except the agent's own
// (marked), locally delivered ones, and the excluded ones. Locally delivered
// traffic (through lo: loopback and the host's own addresses) is never captured,
// so nothing, even to the agent's own ports on loopback, loops back into the agent.
//
// Between the exclusions and that default redirect come the classes: a connection
// opened by a process of a recognised workload goes to the workload's own port,
// which is how the agent learns who opened it. With UnmatchedBypass there is no
// default redirect: only the classes' processes are captured.
func (rs *Ruleset) addOutbound(n normalized) {
	ports := rs.addSet(portSet(setOutboundExcluded, n.outboundExcludedPorts))
	cidrs4 := rs.addSet(prefixSet(setExcludedCIDRs4, false, n.excluded4))
	cidrs6 := rs.addSet(prefixSet(setExcludedCIDRs6, true, n.excluded6))
	uids := rs.addSet(idSet(setExcludedUIDs, nftables.TypeUID, n.excludedUIDs))
	gids := rs.addSet(idSet(setExcludedGIDs, nftables.TypeGID, n.excludedGIDs))

	rules := []rule{{terms: []term{markHasBits(n.mark), bypass()}, comment: "the agent's own connections"}}
	rules = append(rules, rs.onThisHost(n)...)
	rules = append(rules, []rule{
		{terms: []term{daddrIn(cidrs4), bypass()}, comment: "excluded destinations"},
		{terms: []term{daddrIn(cidrs6), bypass()}, comment: "excluded destinations"},
		{terms: []term{tcpDportIn(ports), bypass()}, comment: "excluded destination ports"},
		{terms: []term{socketUIDIn(uids), bypass()}, comment: "excluded users"},
		{terms: []term{socketGIDIn(gids), bypass()}, comment: "excluded groups"},
	}...)
	for _, c := range n.classes {
		rules = append(rules, rs.classRules(c)...)
	}
	if !n.unmatchedBypass {
		if n.sameHost {
			rules = append(rules, rule{terms: []term{outputInterface("lo"), bypass()}, comment: "delivered on this host, from a process of no workload"})
		}
		rules = append(rules, rule{terms: []term{isTCP(), redirectTo(n.outboundPort)}, comment: "to the agent's outbound listener"})
	}
	rs.chains = append(rs.chains, chain{
		name:     outboundChain,
		kind:     nftables.ChainTypeNAT,
		hook:     nftables.ChainHookOutput,
		hookName: "output",
		priority: *nftables.ChainPriorityNATDest,
		rules:    rules,
	})
}

// onThisHost leaves uncaptured what is delivered on this host (through lo): all of it, or with sameHost all
// but connections to a local workload's address on a port inbound capture does not leave out, which then
// meet the classes like any other outbound connection (and, from a process no class recognises, are left
// alone after them). The inbound sets are addInbound's (sameHost needs inbound capture).
func (rs *Ruleset) onThisHost(n normalized) []rule {
	lo := outputInterface("lo")
	if !n.sameHost {
		return []rule{{terms: []term{lo, bypass()}, comment: "delivered on this host"}}
	}
	return []rule{
		{terms: []term{lo, tcpDportIn(rs.set(setInboundExcluded)), bypass()}, comment: "delivered on this host to a port inbound capture leaves out"},
		{terms: []term{lo, daddrNotIn(rs.set(setWorkloads4)), bypass()}, comment: "delivered on this host, not to a workload"},
		{terms: []term{lo, daddrNotIn(rs.set(setWorkloads6)), bypass()}, comment: "delivered on this host, not to a workload"},
	}
}

// classRules redirects the TCP of c's processes to c's port: one rule per kind of
// matcher c has (uids and gids each in a set named after the port, which is unique
// among classes), and one per cgroup.
func (rs *Ruleset) classRules(c outboundClass) []rule {
	comment := "workload " + c.name
	var rules []rule
	if len(c.uids) > 0 {
		s := rs.addSet(idSet(fmt.Sprintf("class_%d_uids", c.port), nftables.TypeUID, c.uids))
		rules = append(rules, rule{terms: []term{socketUIDIn(s), isTCP(), redirectTo(c.port)}, comment: comment})
	}
	if len(c.gids) > 0 {
		s := rs.addSet(idSet(fmt.Sprintf("class_%d_gids", c.port), nftables.TypeGID, c.gids))
		rules = append(rules, rule{terms: []term{socketGIDIn(s), isTCP(), redirectTo(c.port)}, comment: comment})
	}
	for _, g := range c.cgroups {
		rules = append(rules, rule{terms: []term{socketCgroupIs(g), isTCP(), redirectTo(c.port)}, comment: comment})
	}
	return rules
}
