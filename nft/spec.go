package nft

import "net/netip"

// The agent's table, the only one this package ever touches.
const (
	TableFamily = "inet"
	TableName   = "ambient_agent"
)

// Defaults used by Render for the zero values of Spec.Mark, Spec.OutboundPort and
// Spec.InboundPort (the ports are ztunnel's, spec/hbone.md).
const (
	DefaultMark         = 0x539
	DefaultOutboundPort = 15001
	DefaultInboundPort  = 15006
)

// Spec is what the ruleset captures. Lists may be in any order and hold duplicates:
// Render sorts and deduplicates them, so equal Specs give equal rulesets.
type Spec struct {
	// Outbound captures TCP opened by local processes (hook output).
	Outbound bool
	// Inbound captures TCP arriving for Workloads (hook prerouting).
	Inbound bool

	// Mark is the SO_MARK of the agent's own sockets; packets whose mark has all
	// of these bits set bypass outbound capture. 0 means DefaultMark.
	Mark uint32
	// OutboundPort is where captured outbound TCP is redirected. 0 means 15001.
	OutboundPort uint16
	// InboundPort is where captured inbound TCP is redirected. 0 means 15006.
	InboundPort uint16

	// Workloads are the local workload addresses whose inbound TCP is captured.
	Workloads []netip.Addr
	// InboundExcludedPorts are destination ports never captured inbound. It must
	// hold the agent's own ports (at least HBONE, 15008), as
	// config.Capture.InboundExcludedPorts does.
	InboundExcludedPorts []uint16

	// OutboundExcludedPorts are destination ports never captured outbound.
	OutboundExcludedPorts []uint16
	// ExcludedCIDRs are destinations never captured outbound (IPv4 and IPv6).
	ExcludedCIDRs []netip.Prefix
	// ExcludedUIDs and ExcludedGIDs are processes (by socket owner) never
	// captured outbound.
	ExcludedUIDs []uint32
	ExcludedGIDs []uint32
}
