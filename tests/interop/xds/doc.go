// Package xds tests the agent's istiod client (agent/internal/xds) against istiod's real discovery server, run
// in-process without Kubernetes by Istio's own test harness (istio.io/istio/pilot/test/xds NewFakeDiscoveryServer,
// ambient enabled, on a real loopback TCP listener): the objects a cluster would hold (WorkloadEntry,
// ServiceEntry, AuthorizationPolicy, a waypoint Gateway with its Service and pod, and what `ambient-agent export
// kubernetes` prints) go in as Kubernetes objects, and the test checks what the client makes of what istiod
// sends, including updates, removals and a resumed stream.
//
// It lives in the interop module (tests/interop, its own go.mod) so that istio.io/istio never enters the agent's
// go.mod. A cold build takes minutes; run it from tests/interop with `go test ./xds/`.
package xds
