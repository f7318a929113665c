package proxy

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
	"github.com/ambient-agent/ambient-agent/ports"
)

// RouteKind is what the outbound proxy does with a captured connection.
type RouteKind int

// Route kinds, in the order of spec/routing.md's outbound decision.
const (
	RouteDrop        RouteKind = iota // never forwarded (loop, or no identity for HBONE)
	RouteHBONE                        // HBONE to Gateway with :authority Target
	RoutePlain                        // plaintext to a known non-HBONE workload
	RoutePassthrough                  // unknown destination: as if not captured
)

func (k RouteKind) String() string {
	switch k {
	case RouteDrop:
		return "drop"
	case RouteHBONE:
		return "hbone"
	case RoutePlain:
		return "plaintext"
	case RoutePassthrough:
		return "passthrough"
	}
	return "unknown"
}

// Route is the outbound decision for one connection.
type Route struct {
	Kind   RouteKind
	Target netip.AddrPort // where the bytes are for (the :authority for HBONE)
	// Tunnel is, for RouteHBONE, the tunnel to open: the identity to present (Source), the HBONE peer
	// (Gateway, ip:15008), the identities it may present (Expected) and the SNI that selects Dest on its node
	// (ServerName). The proxy adds what the connection itself says (authority, forwarded, baggage) and hands it
	// to the pool as it is.
	hbone.Tunnel
	Dest     *state.Workload // the destination workload, when known
	Service  *state.Service  // the service, when the destination was a VIP
	Waypoint *state.Waypoint // the waypoint the connection goes through, if any
	// Hostname is Dest's, when Dest is known by name only: Target (and
	// Gateway) have the port only, the address is resolved at connect time.
	Hostname string
	// Outer is, for an endpoint on another network (double HBONE), the tunnel to that network's east-west
	// gateway that carries Tunnel; Network is the client's network, which the inner request names.
	Outer   *hbone.Tunnel
	Network string
	Reason  string // why, for drops and logs
	// Flag is the response flag of a drop, when it is not telemetry.FlagNoRoute.
	Flag telemetry.Flag
}

// HBONEPort is where peers accept HBONE.
const HBONEPort = ports.HBONE

// DecideOutbound routes a captured connection from src to its original
// destination dst, per spec/routing.md: a service VIP goes to the service's
// waypoint or to one of its endpoints, a workload to its waypoint or to it,
// anything else passes through.
func DecideOutbound(snap *state.Snapshot, src, dst netip.AddrPort) Route {
	return decideOutbound(snap, DefaultSource(snap, src.Addr()), src, dst, rand.IntN)
}

// DecideOutboundFrom is DecideOutbound for a connection opened by the local
// workload from (nil: none, so no identity to present).
func DecideOutboundFrom(snap *state.Snapshot, from *state.Workload, src, dst netip.AddrPort) Route {
	return decideOutbound(snap, from, src, dst, rand.IntN)
}

// DefaultSource is the local workload a connection from src is attributed
// to when its process was not recognised: the owner of the source address,
// else the host's first workload.
func DefaultSource(snap *state.Snapshot, src netip.Addr) *state.Workload {
	return defaultSource(snap, src, nil)
}

// defaultSource is DefaultSource among the workloads reserved does not
// reserve: a workload recognised by its processes (user, group or unit) has
// an identity for those processes only, which no other process may borrow by
// binding its address. nil when none is left: nothing to present.
func defaultSource(snap *state.Snapshot, src netip.Addr, reserved func(uid string) bool) *state.Workload {
	free := func(w *state.Workload) bool { return reserved == nil || !reserved(w.UID) }
	if w, ok := snap.LocalByAddr(src); ok && free(w) {
		return w
	}
	for _, w := range snap.Local() {
		if free(w) {
			return w
		}
	}
	return nil
}

func decideOutbound(snap *state.Snapshot, from *state.Workload, src, dst netip.AddrPort, intn func(int) int) Route {
	o := outbound{snap: snap, from: from, src: src, intn: intn}
	dstIP := dst.Addr().Unmap()
	dst = netip.AddrPortFrom(dstIP, dst.Port())
	if dstIP.IsLoopback() {
		// Capture never redirects traffic that stays on this host (through lo), so
		// a loopback original destination is a connection made straight to one of
		// the agent's outbound listeners (15001, 15101, ...): carrying it would
		// dial the agent again, and again.
		return Route{Kind: RouteDrop, Target: dst, Reason: "loopback destination: a direct connection to the agent"}
	}
	if svc, ok := snap.ServiceByVIP(dstIP); ok && svc.VisibleTo(o.namespace()) {
		return o.service(dst, svc)
	}
	w, known := snap.WorkloadFor(dst)
	if !known {
		if snap.Contested(dstIP) { // never in plaintext to an address the mesh claims
			return Route{Kind: RouteDrop, Target: dst, Flag: telemetry.FlagContested,
				Reason: "address contested: claimed by workloads none of which proves it or holds it (ambient-agent doctor)"}
		}
		if node, ok := snap.Unreachable(dstIP); ok { // nor to one whose node is only out of reach
			return Route{Kind: RouteDrop, Target: dst, Flag: telemetry.FlagConnect,
				Reason: fmt.Sprintf("address of a workload of node %s, which failed or is cut off: not sent in plaintext until it is back or forgotten", node)}
		}
		// A CIDR VIP, after workload addresses: a workload inside the range is
		// reached as itself.
		if svc, ok := snap.ServiceByRange(dstIP, o.namespace()); ok {
			return o.service(dst, svc)
		}
		return Route{Kind: RoutePassthrough, Target: dst}
	}
	return o.workload(dst, w)
}

// outbound is one outbound decision in the making.
type outbound struct {
	snap *state.Snapshot
	from *state.Workload // the local workload that opened the connection
	src  netip.AddrPort
	intn func(int) int
}

// namespace is the namespace of the local workload that opened the
// connection, "" when none (it sees only public services).
func (o outbound) namespace() string {
	if o.from == nil {
		return ""
	}
	return o.from.Namespace
}

// identity is the local identity the connection presents.
func (o outbound) identity() (spiffeid.ID, bool) {
	if o.from == nil {
		return spiffeid.ID{}, false
	}
	id, err := o.from.Identity()
	return id, err == nil
}

// routeService sends a connection for a VIP to the service's waypoint with
// the service as target, or to one endpoint; never to the VIP in plaintext.
func (o outbound) service(dst netip.AddrPort, svc *state.Service) Route {
	if !svc.HasPort(dst.Port()) {
		return Route{Kind: RouteDrop, Target: dst, Service: svc, Reason: fmt.Sprintf("service %s has no port %d", svc.Hostname, dst.Port())}
	}
	ref, wps := o.snap.PickServiceWaypoint(svc, o.intn)
	if len(wps) == 0 && namesWaypoint(ref) {
		return Route{Kind: RouteDrop, Target: dst, Service: svc, Reason: fmt.Sprintf("service %s names waypoint %q, which is not known or not bound (ambient-agent doctor)", svc.Key(), ref)}
	}
	if len(wps) > 0 && !fromWaypoint(o.src.Addr(), o.snap.BoundWaypoints(svc)) {
		r := o.viaWaypoint(dst, wps)
		r.Service = svc
		return r
	}
	if svc.Passthrough() { // resolution NONE: where the client dialled, as if not captured
		return Route{Kind: RoutePassthrough, Target: dst, Service: svc}
	}
	e, target, ok := state.PickEndpoint(o.reachable(svc), dst.Port(), o.from, o.intn)
	if !ok {
		return Route{Kind: RouteDrop, Target: dst, Service: svc, Reason: fmt.Sprintf("service %s has no healthy endpoint for port %d", svc.Hostname, dst.Port())}
	}
	if o.offNetwork(e.Workload) {
		return o.throughGateway(dst, svc, e.Workload)
	}
	// Straight to the endpoint, even one with a workload waypoint: a
	// workload's waypoint is for traffic addressed to the workload, never for
	// traffic addressed to a service (ztunnel, Istio 1.22 and later). An
	// endpoint known by hostname only is resolved when the agent connects.
	r := o.direct(netip.AddrPortFrom(sameFamily(e.Workload.Addresses, dst.Addr()), target), e.Workload)
	r.Service = svc
	if len(e.Workload.Addresses) == 0 && r.Kind != RouteDrop {
		r.Hostname = e.Workload.Hostname
	}
	if r.Kind == RouteHBONE { // a ServiceEntry's subjectAltNames may answer too
		r.Expected = append(r.Expected, svc.ExtraIdentities()...)
	}
	return r
}

// network is the network of the local workload that opened the connection ("": unknown, every workload is
// taken as reachable directly, as before networks were set).
func (o outbound) network() string {
	if o.from == nil {
		return ""
	}
	return o.from.Network
}

// offNetwork reports whether w is on another network than the connection's source: reached only through that
// network's gateway.
func (o outbound) offNetwork(w *state.Workload) bool {
	return state.OffNetwork(o.network(), w.Network)
}

// reachable is svc with only the endpoints this connection can reach: those on its network, and those of
// another network that has a known gateway (spec/routing.md, endpoint selection). svc itself, not a copy, when
// no endpoint is off the network.
func (o outbound) reachable(svc *state.Service) *state.Service {
	if !slices.ContainsFunc(svc.Endpoints, func(e *state.Endpoint) bool { return o.offNetwork(e.Workload) }) {
		return svc
	}
	part := *svc
	part.Endpoints = make([]*state.Endpoint, 0, len(svc.Endpoints))
	for _, e := range svc.Endpoints {
		if !o.offNetwork(e.Workload) || len(o.snap.GatewaysOf(e.Workload.Network)) > 0 {
			part.Endpoints = append(part.Endpoints, e)
		}
	}
	return &part
}

// throughGateway sends a connection for service svc to its endpoint w on another network by double HBONE: an
// outer tunnel to that network's gateway naming the service, and inside it the tunnel to w's node, which must
// present one of the service's identities.
func (o outbound) throughGateway(dst netip.AddrPort, svc *state.Service, w *state.Workload) Route {
	source, ok := o.identity()
	if !ok {
		return Route{Kind: RouteDrop, Target: dst, Dest: w, Service: svc, Reason: "no local workload identity for an HBONE destination"}
	}
	gws := o.snap.GatewaysOf(w.Network)
	if len(gws) == 0 { // reachable() keeps only endpoints whose network has one
		return Route{Kind: RouteDrop, Target: dst, Dest: w, Service: svc, Reason: fmt.Sprintf("network %s has no known gateway", w.Network)}
	}
	g := gws[o.intn(len(gws))]
	gwID, err := g.ID()
	if err != nil {
		return Route{Kind: RouteDrop, Target: dst, Dest: w, Service: svc, Reason: err.Error()}
	}
	expected := serviceIdentities(svc, w)
	if len(expected) == 0 {
		return Route{Kind: RouteDrop, Target: dst, Dest: w, Service: svc, Reason: fmt.Sprintf("service %s has no identity to verify its endpoints on network %s by", svc.Hostname, w.Network)}
	}
	outer := &hbone.Tunnel{Source: source, Expected: []spiffeid.ID{gwID}, Gateway: netip.AddrPortFrom(sameFamily(g.Addresses, dst.Addr()), cmp.Or(g.Port, HBONEPort))}
	return Route{Kind: RouteHBONE, Target: dst, Dest: w, Service: svc, Tunnel: hbone.Tunnel{Source: source, Expected: expected},
		Outer: outer, Network: o.network()}
}

// serviceIdentities are the identities an endpoint of svc reached across networks may present: the service's
// subject alt names (istiod lists its workloads' identities there), the accounts that may back it (gossip), and
// w's own.
func serviceIdentities(svc *state.Service, w *state.Workload) []spiffeid.ID {
	out := svc.ExtraIdentities()
	if td, err := spiffeid.TrustDomainFromString(w.TrustDomain); err == nil {
		for _, sa := range svc.ServiceAccounts {
			if id, err := spiffeid.FromSegments(td, "ns", svc.Namespace, "sa", sa); err == nil && !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	if id, err := w.Identity(); err == nil && !slices.Contains(out, id) {
		out = append(out, id)
	}
	return out
}

// routeWorkload sends a connection for a workload address to the workload's
// waypoint, to the workload over HBONE, or in plaintext when it is not captured.
func (o outbound) workload(dst netip.AddrPort, w *state.Workload) Route {
	if o.from != nil && w.Local && w.UID == o.from.UID {
		// A workload calling itself at its own address, on this host (same-host
		// capture): delivered as it would be without the mesh, as a pod's call
		// to its own address never leaves the pod.
		return Route{Kind: RoutePassthrough, Target: dst, Dest: w}
	}
	wps := o.snap.WaypointOf(w)
	if len(wps) == 0 && w.Tunnel == state.TunnelHBONE && namesWaypoint(w.UseWaypoint) {
		// Never around a waypoint the workload asked for: its policies would be bypassed.
		return Route{Kind: RouteDrop, Target: dst, Dest: w, Reason: fmt.Sprintf("workload %s names waypoint %q, which is not known or not bound (ambient-agent doctor)", w.UID, w.UseWaypoint)}
	}
	if len(wps) > 0 && !fromWaypoint(o.src.Addr(), wps) {
		r := o.viaWaypoint(dst, wps)
		r.Dest = w
		return r
	}
	if o.offNetwork(w) {
		// Across networks only service traffic goes, through the gateway, which routes by service name.
		return Route{Kind: RouteDrop, Target: dst, Dest: w, Reason: fmt.Sprintf("workload %s is on network %s: reachable through its services only", w.UID, w.Network)}
	}
	return o.direct(dst, w)
}

// direct sends a connection to workload w itself: over HBONE when it is
// captured, else in plaintext.
func (o outbound) direct(dst netip.AddrPort, w *state.Workload) Route {
	if w.Tunnel != state.TunnelHBONE {
		return Route{Kind: RoutePlain, Target: dst, Dest: w}
	}
	source, ok := o.identity()
	if !ok {
		return Route{Kind: RouteDrop, Target: dst, Dest: w, Reason: "no local workload identity for an HBONE destination"}
	}
	expected, err := w.Identity()
	if err != nil {
		return Route{Kind: RouteDrop, Target: dst, Dest: w, Reason: "destination has no valid identity: " + err.Error()}
	}
	return Route{Kind: RouteHBONE, Target: dst, Dest: w, Tunnel: hbone.Tunnel{Source: source, Expected: []spiffeid.ID{expected},
		Gateway: netip.AddrPortFrom(dst.Addr(), HBONEPort), ServerName: w.ServerName()}}
}

// namesWaypoint reports whether a use_waypoint value names a waypoint.
func namesWaypoint(ref string) bool { return ref != "" && ref != state.UseWaypointNone }

// viaWaypoint tunnels to one instance of a waypoint, with target as :authority.
func (o outbound) viaWaypoint(target netip.AddrPort, wps []*state.Waypoint) Route {
	wp := wps[o.intn(len(wps))]
	source, ok := o.identity()
	if !ok {
		return Route{Kind: RouteDrop, Target: target, Waypoint: wp, Reason: "no local workload identity for a waypoint"}
	}
	expected, err := wp.Identity()
	if err != nil {
		return Route{Kind: RouteDrop, Target: target, Waypoint: wp, Reason: "waypoint has no valid identity: " + err.Error()}
	}
	return Route{Kind: RouteHBONE, Target: target, Waypoint: wp, Tunnel: hbone.Tunnel{Source: source, Expected: []spiffeid.ID{expected},
		Gateway: netip.AddrPortFrom(sameFamily(wp.Addresses, target.Addr()), HBONEPort)}}
}

// fromWaypoint reports whether a connection from src comes from one of the
// waypoint's instances: a waypoint is never sent back to itself. An instance
// on this host never counts: the waypoint role's own connections are never
// captured, so a captured one from its address is a local process's that
// bound it, which must not skip the waypoint.
func fromWaypoint(src netip.Addr, wps []*state.Waypoint) bool {
	for _, wp := range wps {
		if !wp.Local && wp.HasAddress(src) {
			return true
		}
	}
	return false
}

// sameFamily picks the first address of the family of like, else the first.
func sameFamily(addrs []netip.Addr, like netip.Addr) netip.Addr {
	if i := slices.IndexFunc(addrs, func(a netip.Addr) bool { return a.Is4() == like.Is4() }); i >= 0 {
		return addrs[i]
	}
	if len(addrs) == 0 {
		return netip.Addr{}
	}
	return addrs[0]
}
