// Package xds learns the cluster's workloads, services, waypoints and authorization policies from istiod, the
// way a ztunnel does: a delta ADS stream (envoy DeltaAggregatedResources, istiod port 15012) subscribed, as a
// ztunnel node, to Istio's workload API (istio.workload.Address: workloads and services) and to its compiled
// L4 policies (istio.security.Authorization).
//
// What it owns:
//
//   - the stream: TLS to istiod (its root certificate, the caller's client certificate and/or bearer token),
//     the ztunnel node id and metadata istiod needs (options.go), wildcard subscriptions, ACK or NACK of every
//     response with its nonce (the DeltaDiscoveryRequest/Response envelope written and read with protowire,
//     envelope.go), reconnection with backoff that resumes with initial_resource_versions so that
//     istiod sends only what changed (stream.go, client.go);
//   - decoding: the resources are read with protowire from the field numbers of Istio's workload.proto and
//     authorization.proto (address.go, authorization.go), so the agent does not depend on istio.io/istio. A
//     resource that does not decode, or that ztunnel would refuse, is refused on its own: the previous version
//     stays in the view and istiod gets a NACK naming it (store.go);
//   - the view: the resources mapped into the agent's types (view.go): remote state.Workloads, service
//     declarations of node "istiod", the instances of the waypoints in use as state.Waypoints, and the policies
//     as policy.XDSAuthorization. Current returns the latest view, complete once istiod has answered both
//     subscriptions; Changed wakes a reader after each change (1-buffered: a slow reader skips stale views).
//
// istiod resolves waypoints and scopes itself, so every workload and service carries an explicit UseWaypoint:
// the "namespace/name" of its waypoint, or "none". Workloads and VIPs on another network than the host's are
// left out: istiod's network gateways are not read yet (the data path's double HBONE serves gossip meshes).
//
// The composition root merges the view with local and gossiped state and hands the policies to the policy
// package. xds may import config, policy and state (lower layers), gRPC and protowire; it must not import app,
// admin, proxy, hbone, capture, dns or discovery, nor istio.io/istio, nor (outside tests) go-control-plane's
// generated types: the ADS envelope is encoded by hand too (envelope.go), as their descriptors cost every
// process megabytes of memory. The tests keep them, to check the wire format against them.
package xds
