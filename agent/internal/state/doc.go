// Package state is the mesh model the data path routes with: workloads (and,
// later, services, waypoints and policies) as immutable indexed snapshots,
// mirroring Istio's workload API (istio.workload.Workload) so that state learned
// from gossip or istiod maps onto it without a redesign.
//
// A Snapshot is never changed once published; a Store swaps in a new one
// atomically and readers never lock. state is pure: no sockets, no HTTP, no
// gossip, no netlink.
package state
