package nft

import "github.com/google/nftables"

// outboundChain hooks locally originated packets. Being a nat chain, it sees only
// the first packet of each connection; conntrack applies the verdict to the rest.
const outboundChain = "outbound"

// addOutbound adds the outbound sets and chain: every locally originated TCP
// connection is redirected to the agent's outbound port, except the agent's own
// (marked), locally delivered ones, and the excluded ones. Locally delivered
// traffic (through lo: loopback and the host's own addresses) is never captured,
// so nothing, even to the agent's own ports on loopback, loops back into the agent.
func (rs *Ruleset) addOutbound(n normalized) {
	ports := rs.addSet(portSet(setOutboundExcluded, n.outboundExcludedPorts))
	cidrs4 := rs.addSet(prefixSet(setExcludedCIDRs4, false, n.excluded4))
	cidrs6 := rs.addSet(prefixSet(setExcludedCIDRs6, true, n.excluded6))
	uids := rs.addSet(idSet(setExcludedUIDs, nftables.TypeUID, n.excludedUIDs))
	gids := rs.addSet(idSet(setExcludedGIDs, nftables.TypeGID, n.excludedGIDs))

	rs.chains = append(rs.chains, chain{
		name:     outboundChain,
		hook:     nftables.ChainHookOutput,
		hookName: "output",
		priority: *nftables.ChainPriorityNATDest,
		rules: []rule{
			{terms: []term{markHasBits(n.mark), bypass()}, comment: "the agent's own connections"},
			{terms: []term{outputInterface("lo"), bypass()}, comment: "delivered on this host"},
			{terms: []term{daddrIn(cidrs4), bypass()}, comment: "excluded destinations"},
			{terms: []term{daddrIn(cidrs6), bypass()}, comment: "excluded destinations"},
			{terms: []term{tcpDportIn(ports), bypass()}, comment: "excluded destination ports"},
			{terms: []term{socketUIDIn(uids), bypass()}, comment: "excluded users"},
			{terms: []term{socketGIDIn(gids), bypass()}, comment: "excluded groups"},
			{terms: []term{isTCP(), redirectTo(n.outboundPort)}, comment: "to the agent's outbound listener"},
		},
	})
}
