// Package policy is the agent's L4 authorization (spec/authz.md): it reads Istio's own
// AuthorizationPolicy and PeerAuthentication YAML, compiles it into the L4 form istiod sends to ztunnels
// (istio.security.Authorization: rules -> clauses -> matches), and decides inbound connections with
// ztunnel's semantics, saying which policy and rule decided.
//
// The pipeline, one file per step:
//
//	Parse(name, data) ([]Resource, []Problem)   parse.go, parse_*.go: multi-document YAML, validated as
//	                                            istiod's webhook would; problems name file, document, line
//	                                            and field path. A bad file yields no resources at all.
//	LoadDir(dir) ([]Resource, error)            load.go: every *.yaml/*.yml of a directory, all or nothing
//	                                            (the error is Problems). The only file touching the disk.
//	Compile(resources, Options) (*Set, []Warning)
//	                                            convert.go, peerauthn.go, compile.go: the istiod conversion
//	                                            (L7 fields, targetRef, AUDIT/CUSTOM, PeerAuthentication
//	                                            modes), indexed by namespace and selector label.
//	Load(dir, Options) (*Set, []Warning, error) LoadDir + Compile.
//	(*Set).Evaluate(Conn) Decision              evaluate.go, match.go: deny first, then allow. A Decision
//	                                            is an Outcome (Allow, Reason, Policy "ns/name", Kind, Rule)
//	                                            plus DryRun *Outcome when dry-run policies apply.
//	(*Set).Applicable(Conn) []Authorization     the policies a decision considers, for explanations.
//	(*Set).EvaluateWaypoint(Conn, WaypointTarget) Decision
//	                                            waypoint.go: the same steps over the policies with targetRefs
//	                                            attached to the waypoint's Gateway, the target's Service or
//	                                            ServiceEntry, and the istio-waypoint GatewayClass; no
//	                                            selector policy, no PeerAuthentication. ApplicableWaypoint
//	                                            lists them.
//	(*Set).Summary() []PolicySummary            summary.go: JSON-friendly, for /config_dump; with
//	(*Set).Authorizations(), Len(), WaypointPolicies().
//	(*Set).WithXDS([]XDSAuthorization) (*Set, []Warning)
//	                                            xds.go, bind.go: the policies istiod sends ztunnels
//	                                            (istio.security.Authorization, decoded by the xDS client
//	                                            into plain XDS* types), compiled by CompileXDS and enforced
//	                                            next to the local ones in a new Set: GLOBAL, NAMESPACE, and
//	                                            WORKLOAD_SELECTOR by the keys istiod binds to the
//	                                            destination workload (Conn.BoundPolicies), as ztunnel does.
//
// How the agent uses it: on start, on a change in [policy] dir and on SIGHUP, call Load with the
// configured root namespace; on error log the Problems and keep the current Set; otherwise log the
// Warnings and swap the new *Set into an atomic.Pointer. With istiod, keep the Set Load returned and swap
// in its WithXDS(istiod's latest policies) instead, after every reload and every xDS update. Per inbound
// connection call Evaluate with the destination workload (namespace, labels, address, target port, and
// the policy keys istiod bound to it) and the peer (verified SPIFFE ID, or the zero ID for plaintext, and
// its address): deny -> HTTP 401 on HBONE, close on plaintext. After a swap, Evaluate the live connections
// again against the new Set and close those now denied. Decision.DryRun, when set, is logged and never
// enforced. A nil *Set allows everything.
//
// As a waypoint, the agent calls EvaluateWaypoint per connection with the caller's verified identity and
// the target (service VIP or workload address, and port) and re-evaluates live connections after a swap
// the same way.
//
// Other kinds of resources in the files are ignored with a warning. Policies with targetRef/targetRefs are
// for waypoints: Evaluate never considers them, EvaluateWaypoint only them; (*Set).WaypointPolicies lists
// them as parsed. The waypoint is L4 only: their L7 attributes are handled as for the node agent.
//
// Deviations from istiod, on purpose: a namespace is required in metadata (a host has no `kubectl -n`);
// two resources of the same kind, namespace and name are an error; port-level PeerAuthentication follows
// the documented inheritance (a port's mode overrides the workload's) where istiod's converter has
// corner cases (a DISABLE port under an inherited STRICT mode stays STRICT there, and is exempt here).
// A STRICT PeerAuthentication's DENY is reported under the PeerAuthentication's own name rather than
// istiod's synthetic "istio_converted_static_strict". At a waypoint, a Service and a ServiceEntry reference
// of the same name attach to the same service: a host's services come from one registry.
//
// policy is pure: no sockets, no net/http, no os/exec, no gossip, no netlink, no logging; it imports only
// go-spiffe's spiffeid and sigs.k8s.io/yaml beyond the standard library, and no agent package.
package policy
