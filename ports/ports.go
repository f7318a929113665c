// Package ports holds the agent's well-known ports, the one place that
// defines them: the listeners, the capture rules, the configuration's
// defaults and checks, and the CLI all take them from here (`make lint`
// refuses a literal elsewhere). They are Istio's, so that a host looks like
// a node with a ztunnel to everything that talks to it.
package ports

const (
	// Admin is the read-only admin listener on loopback (ztunnel's 15000).
	Admin = 15000
	// Outbound receives the local processes' captured outbound connections
	// (ztunnel's 15001).
	Outbound = 15001
	// InboundPlaintext receives captured inbound connections that did not
	// arrive over HBONE (ztunnel's 15006).
	InboundPlaintext = 15006
	// HBONE is where peers open tunnels (ztunnel's 15008; Istio's
	// hbone_mtls_port).
	HBONE = 15008
	// Metrics serves Prometheus metrics (ztunnel's 15020).
	Metrics = 15020
	// Readiness answers /healthz/ready (ztunnel's 15021).
	Readiness = 15021
	// DNS is the DNS proxy (ztunnel's 15053).
	DNS = 15053
	// FirstWorkloadOutbound is the first of the outbound listeners of the
	// local workloads recognised by their processes, one port each: their
	// connections present that workload's identity.
	FirstWorkloadOutbound = 15101
	// MaxWorkloadOutbound is how many of those ports there are at most.
	MaxWorkloadOutbound = 1000
)

// Illegal reports whether p is one of the data-path listeners a tunnel or a
// captured connection must never be sent to: it would loop through the
// agent (ztunnel refuses the same three).
func Illegal(p uint16) bool { return p == Outbound || p == InboundPlaintext || p == HBONE }

// Agent reports whether p is one of the agent's own ports on a host.
func Agent(p uint16) bool {
	switch p {
	case Admin, Outbound, InboundPlaintext, HBONE, Metrics, Readiness, DNS:
		return true
	}
	return p >= FirstWorkloadOutbound && int(p) < FirstWorkloadOutbound+MaxWorkloadOutbound
}

// The socket marks (SO_MARK) and the routing of the agent's own traffic, for the same reason defined once: the
// capture rules, the listeners, the dialers and the configuration's checks must agree on them.
const (
	// Mark is on every socket of the agent (the default of [capture] mark): outbound capture lets marked
	// connections through, so the agent's own never loop back into it, and the guard hands redirected
	// connections only to marked listeners. Only a privileged process can mark a socket.
	Mark = 0x539
	// ReturnMark is on the agent's transparent sockets too, the connections it makes to a local application
	// from the client's address so that the application sees the real client. Its bit is apart from Mark's:
	// the capture table puts it on the application's replies, and a policy rule routes those back to the agent.
	// Any other packet with this bit would be routed to the agent too, so it avoids the bits others use on
	// hosts: kube-proxy's 0x4000 and 0x8000, Calico's upper half, Cilium's 0x0f00, Weave's 0x20000.
	ReturnMark = 0x2000
	// ReturnTable is the routing table of that rule, whose only route delivers every address locally, and
	// ReturnRulePriority the rule's place, ahead of the main table's (32766).
	ReturnTable        = 15006
	ReturnRulePriority = 32760
	// ConntrackZone is the conntrack zone of the original direction of those connections (package nft, the
	// zone table): the agent's connection from a client's address is then never taken for one of that client's
	// own connections that arrived from the network. The host's other connections stay in zone 0.
	ConntrackZone = 15006
)
