package nft

import "github.com/google/nftables"

// inboundChain hooks arriving packets before routing. Locally originated packets
// never pass it, so a local process reaching a local workload is not captured
// inbound (nor outbound: it is delivered through lo).
const inboundChain = "inbound"

// addInbound adds the inbound sets and chain: TCP to a local workload address on
// a port that is not excluded is redirected to the agent's inbound plaintext port.
func (rs *Ruleset) addInbound(n normalized) {
	ports := rs.addSet(portSet(setInboundExcluded, n.inboundExcludedPorts))
	w4 := rs.addSet(addrSet(setWorkloads4, false, n.workloads4))
	w6 := rs.addSet(addrSet(setWorkloads6, true, n.workloads6))

	rs.chains = append(rs.chains, chain{
		name:     inboundChain,
		kind:     nftables.ChainTypeNAT,
		hook:     nftables.ChainHookPrerouting,
		hookName: "prerouting",
		priority: *nftables.ChainPriorityNATDest,
		rules: []rule{
			{terms: []term{tcpDportIn(ports), bypass()}, comment: "excluded ports, the agent's own among them"},
			{terms: []term{daddrIn(w4), isTCP(), redirectTo(n.inboundPort)}, comment: "to the agent's inbound listener"},
			{terms: []term{daddrIn(w6), isTCP(), redirectTo(n.inboundPort)}, comment: "to the agent's inbound listener"},
		},
	})
}
