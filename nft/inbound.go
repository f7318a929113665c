package nft

import "github.com/google/nftables"

// inboundChain hooks arriving packets before routing. Locally originated packets
// never pass it, so a local process reaching a local workload is not captured
// inbound (nor outbound: it is delivered through lo).
const inboundChain = "inbound"

// addInbound adds the inbound sets and chain: TCP to a local workload address on
// a port that is not excluded is redirected to the agent's inbound plaintext port;
// with allLocal, so is TCP to every other local address of the host (the kernel's
// view at each packet, so addresses added later count), but the left-out ones.
func (rs *Ruleset) addInbound(n normalized) {
	ports := rs.addSet(portSet(setInboundExcluded, n.inboundExcludedPorts))
	w4 := rs.addSet(addrSet(setWorkloads4, false, n.workloads4))
	w6 := rs.addSet(addrSet(setWorkloads6, true, n.workloads6))
	rules := []rule{
		{terms: []term{tcpDportIn(ports), bypass()}, comment: "excluded ports, the agent's own among them"},
		{terms: []term{daddrIn(w4), isTCP(), redirectTo(n.inboundPort)}, comment: "to the agent's inbound listener"},
		{terms: []term{daddrIn(w6), isTCP(), redirectTo(n.inboundPort)}, comment: "to the agent's inbound listener"},
	}
	if n.allLocal {
		l4 := rs.addSet(prefixSet(setLeftOut4, false, n.leftOut4))
		l6 := rs.addSet(prefixSet(setLeftOut6, true, n.leftOut6))
		rules = append(rules,
			rule{terms: []term{daddrIn(l4), bypass()}, comment: "addresses of the host left unmeshed"},
			rule{terms: []term{daddrIn(l6), bypass()}, comment: "addresses of the host left unmeshed"},
			rule{terms: []term{daddrLocal(), isTCP(), redirectTo(n.inboundPort)}, comment: "every other address of the host: refused unless a workload's"},
		)
	}

	rs.chains = append(rs.chains, chain{
		name:     inboundChain,
		kind:     nftables.ChainTypeNAT,
		hook:     nftables.ChainHookPrerouting,
		hookName: "prerouting",
		priority: *nftables.ChainPriorityNATDest,
		rules:    rules,
	})
}
