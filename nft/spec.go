package nft

import (
	"net/netip"

	agentports "github.com/ambient-agent/ambient-agent/ports"
)

// The agent's table, the only one this package ever touches.
const (
	TableFamily = "inet"
	TableName   = "ambient_agent"
)

// Defaults used by Render for the zero values of Spec.Mark, Spec.OutboundPort and
// Spec.InboundPort (the ports are ztunnel's, spec/hbone.md).
const (
	DefaultMark         = agentports.Mark
	DefaultOutboundPort = agentports.Outbound
	DefaultInboundPort  = agentports.InboundPlaintext
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
	// InboundAllLocal captures inbound TCP to every local address of the host
	// (fib daddr type local: every family, addresses added later), not only to
	// Workloads, except InboundLeftOut.
	InboundAllLocal bool
	// InboundLeftOut are destinations never captured inbound with
	// InboundAllLocal (addresses of the host that are not meshed). A workload
	// address in them is still captured.
	InboundLeftOut []netip.Prefix
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

	// OutboundClasses tell local workloads apart: the outbound TCP of a process
	// that matches a class is redirected to the class's port instead of
	// OutboundPort, so the agent knows which workload opened it. They are tried in
	// order, after the exclusions; the first that matches wins.
	OutboundClasses []OutboundClass
	// UnmatchedBypass leaves the outbound TCP of processes that match no class
	// uncaptured; by default it goes to OutboundPort.
	UnmatchedBypass bool

	// GuardListeners lets only the agent's own sockets receive redirected
	// connections: a connection redirected to one of the ports this table
	// redirects to (InboundPort, OutboundPort, the classes' ports) is reset
	// unless the listening socket carries Mark (see guard.go). Without it, a local
	// user who binds one of those ports while the agent is down, or binds the
	// loopback address the agent left free (::1 next to 127.0.0.1), receives
	// other users' connections. Set it only once every listener on those ports
	// is opened with the mark (capture.ListenMarked): an unmarked listener of the
	// agent's own would have its connections reset too.
	GuardListeners bool

	// SameHost captures the TCP a process of an OutboundClass opens to a local workload address (delivered
	// through lo, which is otherwise never captured): it goes to the class's port like any outbound
	// connection of the class, so that a call between two workloads of this host carries the caller's
	// identity to the callee's inbound authorization. Processes of no class, loopback addresses, other
	// addresses of the host and the InboundExcludedPorts stay uncaptured. Needs Inbound and Outbound.
	SameHost bool

	// ReturnMark is the mark (bits of their own, apart from Mark's) of the agent's transparent sockets: the
	// connections it makes to a local application from a client's address, so that the application sees the
	// real client. The table keeps it on their connection (ct mark) and puts it on the application's replies,
	// which capture.ReturnPath's rule then routes back to the agent instead of out of the host. 0: none.
	ReturnMark uint32
}

// OutboundClass sends the captured outbound TCP of one local workload's processes
// to its own port. A process matches when its socket's owner uid is in UIDs, or
// its gid in GIDs, or it was opened in one of Cgroups (or below). Lists may be in
// any order and hold duplicates.
type OutboundClass struct {
	Name    string        // the workload, for the rules' comment
	Port    uint16        // where its connections are redirected, e.g. 15101
	UIDs    []uint32      // socket owner uid (meta skuid)
	GIDs    []uint32      // socket owner gid (meta skgid)
	Cgroups []CgroupMatch // socket cgroup v2 (socket cgroupv2 level L)
}

// CgroupMatch is a cgroup v2 directory, as the kernel compares it: the socket's
// cgroup's ancestor at Level (the directory's depth below the root of the v2
// hierarchy, 2 for /system.slice/foo.service) must have the id ID (the inode
// number of the directory). The id is that of one directory's lifetime: when a
// unit restarts, systemd creates its cgroup anew and the match must be rebuilt.
// capture.Cgroup resolves a unit's cgroup path.
type CgroupMatch struct {
	// Path is the directory relative to /sys/fs/cgroup, the way nft names it
	// ("system.slice/foo.service"; on hybrid hosts, where cgroup v2 is mounted at
	// /sys/fs/cgroup/unified, "unified/system.slice/foo.service"). Only the text
	// form uses it; when empty, that prints ID, as nft does for a cgroup it cannot
	// find.
	Path  string
	Level uint32
	ID    uint64
}
