package proxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/ports"
)

// The waypoint role (spec/routing.md): tunnels that arrive on the address of
// a waypoint this host runs are for a service VIP or a workload the waypoint
// manages. They are authorized with the caller's identity against the
// policies attached to the waypoint or the service, then forwarded to the
// workload, or to one endpoint of the service, with the waypoint's identity.
// Anything the waypoint does not manage is refused, and it forwards only over
// HBONE to captured workloads of its scope at addresses that can be theirs
// (upstreamRefusal): never an open proxy, whatever gossip declares.

// waypointTarget is what one waypoint tunnel is for.
type waypointTarget struct {
	wp  *state.Waypoint
	svc *state.Service  // a service target
	dst *state.Workload // a workload target
}

// serveWaypoint runs a tunnel that arrived on the address of wp: find the
// managed target, authorize the caller against the waypoint's policies,
// forward to the target over HBONE with the waypoint's identity, answer,
// relay, record.
func (h *InboundHBONE) serveWaypoint(r *hbone.Request, snap *state.Snapshot, wp *state.Waypoint) {
	t := &inboundTunnel{route: "waypoint"}
	call, flag, err := h.authorizeWaypoint(r, snap, wp, t)
	if err != nil {
		h.refuse(r, snap, t, flag, err)
		return
	}
	revoker := &hbone.Revoker{}
	unregister := h.d.Live.addFunc(call.allowed, revoker.Revoke)
	if call.l7 {
		h.serveWaypointL7(r, snap, call, t, revoker, unregister)
		return
	}
	var up net.Conn
	handedOff := false // to the relay, which then closes up and unregisters
	defer func() {
		if !handedOff {
			if up != nil {
				up.Close()
			}
			unregister()
		}
	}()
	up, err = h.forwardCall(r.Context(), snap, call, t)
	if err != nil {
		h.failed(r, snap, t, r.RefuseDial(r.Target.Addr, err))
		return
	}
	handedOff = h.relay(r, snap, t, up, hbone.Baggage{}, revoker, unregister)
}

// waypointCall is a waypoint tunnel its policies allowed.
type waypointCall struct {
	wt     waypointTarget
	target netip.AddrPort
	caller netip.AddrPort // as authorized: forwarded on as the client
	peer   spiffeid.ID    // the caller's identity as authorized (zero: anonymous)
	// l7: the target is an HTTP port of a service; its requests are authorized one by one with conn and at.
	l7   bool
	conn policy.Conn
	at   policy.WaypointTarget
	// allowed re-evaluates the call when policy changes.
	allowed func(*policy.Set) bool
}

// authorizeWaypoint decides a tunnel that arrived on the address of wp, and
// fills in what its record shows: the target, and the caller as authorized
// (the access log, and `forwarded` on the way on, show it).
func (h *InboundHBONE) authorizeWaypoint(r *hbone.Request, snap *state.Snapshot, wp *state.Waypoint, t *inboundTunnel) (waypointCall, hbone.Flag, error) {
	target := r.Target.Addr
	wt, err := managedTarget(snap, wp, target)
	if err != nil {
		return waypointCall{}, hbone.FlagWrongTarget, err
	}
	id, caller, anonymous := waypointCaller(r, wt)
	t.svc, t.dst, t.src, t.anonymous = wt.svc, wt.dst, caller, anonymous
	conn := policy.Conn{DestNamespace: wt.namespace(), DestIP: target.Addr(), DestPort: target.Port(),
		SourceIdentity: id, SourceIP: caller.Addr()}
	if wt.dst != nil {
		conn.DestLabels = wt.dst.Labels
	}
	at := wt.policyTarget()
	call := waypointCall{wt: wt, target: target, caller: caller, peer: id, conn: conn, at: at}
	if wt.svc != nil && isHTTPPort(wt.svc, target.Port()) {
		// At L7 every request is authorized, with the policies of its time: nothing to decide or revoke here.
		call.l7, call.allowed = true, func(*policy.Set) bool { return true }
		return call, hbone.FlagNone, nil
	}
	if dec := h.d.count(conn, h.d.Policy().EvaluateWaypoint(conn, at)); !dec.Allow {
		return waypointCall{}, hbone.FlagDenied, errors.New(dec.String())
	}
	call.allowed = func(set *policy.Set) bool { return set.EvaluateWaypoint(conn, at).Allow }
	return call, hbone.FlagNone, nil
}

// forwardCall forwards an allowed call within the connect timeout, and
// records the workload it reached.
func (h *InboundHBONE) forwardCall(ctx context.Context, snap *state.Snapshot, call waypointCall, t *inboundTunnel) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	up, w, err := h.forward(ctx, snap, call.wt, call.target, call.caller)
	if w != nil {
		t.dst = w
	}
	return up, err
}

// waypointCaller is the caller a waypoint authorizes: the peer of the
// tunnel, its identity and address. Its `forwarded` is its word only, never a
// policy input; a hairpinned plaintext client arrives as its node's hairpin
// identity. The one exception is a tunnel for a workload from a peer
// presenting that workload's own identity, with a client in `forwarded`: an
// agent before hairpin identities hairpinning a plaintext client (or the
// workload calling itself through its waypoint). Its client has no identity:
// it is authorized as anonymous, from `forwarded`, as those agents expect,
// never as the workload.
func waypointCaller(r *hbone.Request, wt waypointTarget) (spiffeid.ID, netip.AddrPort, bool) {
	if ownHairpin(r, wt) {
		return spiffeid.ID{}, netip.AddrPortFrom(r.ForwardedFor.Addr().Unmap(), r.ForwardedFor.Port()), true
	}
	return r.PeerIdentity, netip.AddrPortFrom(r.RemoteAddr.Addr().Unmap(), r.RemoteAddr.Port()), false
}

// ownHairpin reports whether a waypoint tunnel comes from the target
// workload's own node presenting the workload's identity for a client in
// `forwarded` (only that node holds the identity).
func ownHairpin(req *hbone.Request, wt waypointTarget) bool {
	if wt.dst == nil || !req.ForwardedFor.IsValid() {
		return false
	}
	id, err := wt.dst.Identity()
	return err == nil && id == req.PeerIdentity
}

// managedTarget resolves a target the waypoint manages: a VIP of a service
// of its namespace bound to it (the service's use_waypoint names it), or the
// address of a workload bound to it and in its scope (inScope). A service
// with no waypoint of its own is not the waypoint's, whatever its endpoints'
// waypoints: clients reach those endpoints directly (spec/routing.md).
func managedTarget(snap *state.Snapshot, wp *state.Waypoint, target netip.AddrPort) (waypointTarget, error) {
	if svc, ok := snap.ServiceByVIP(target.Addr()); ok {
		if !isWaypoint(snap.BoundWaypoints(svc), wp) {
			return waypointTarget{}, fmt.Errorf("service %s is not bound to waypoint %s", svc.Hostname, wp.Key())
		}
		if svc.Namespace != wp.Namespace {
			return waypointTarget{}, fmt.Errorf("service %s names waypoint %s of another namespace", svc.Key(), wp.Key())
		}
		if !svc.HasPort(target.Port()) {
			return waypointTarget{}, fmt.Errorf("service %s has no port %d", svc.Hostname, target.Port())
		}
		return waypointTarget{wp: wp, svc: svc}, nil
	}
	if w, ok := snap.WorkloadFor(target); ok && serves(snap, wp, w) { // by port on a shared address
		return waypointTarget{wp: wp, dst: w}, nil
	}
	return waypointTarget{}, fmt.Errorf("target %s is not a service or workload managed by waypoint %s", target, wp.Key())
}

// serves reports whether wp is the waypoint of workload w and w is in its scope.
func serves(snap *state.Snapshot, wp *state.Waypoint, w *state.Workload) bool {
	return isWaypoint(snap.WaypointOf(w), wp) && inScope(wp, w)
}

// inScope reports whether w is in the waypoint's scope: its namespace and,
// for a service-account waypoint, that account; or a workload of another
// namespace whose own declaration names the waypoint explicitly
// ("namespace/name", as docs/kubernetes.md's shared waypoint). A service
// never widens it: its endpoints are of its namespace.
func inScope(wp *state.Waypoint, w *state.Workload) bool {
	if w.UseWaypoint == wp.Key() {
		return true
	}
	return w.Namespace == wp.Namespace && (wp.ForServiceAccount == "" || w.ServiceAccount == wp.ForServiceAccount)
}

// isWaypoint reports whether wp is one of the instances.
func isWaypoint(instances []*state.Waypoint, wp *state.Waypoint) bool {
	for _, i := range instances {
		if i.Key() == wp.Key() {
			return true
		}
	}
	return false
}

func (wt waypointTarget) namespace() string {
	if wt.svc != nil {
		return wt.svc.Namespace
	}
	return wt.dst.Namespace
}

func (wt waypointTarget) policyTarget() policy.WaypointTarget {
	t := policy.WaypointTarget{WaypointNamespace: wt.wp.Namespace, WaypointName: wt.wp.Name}
	if wt.svc != nil {
		t.ServiceNamespace, t.ServiceName = wt.svc.Namespace, wt.svc.Name
	}
	return t
}

// forward connects the waypoint to the workload target, or to an endpoint of
// the service target, over HBONE, presenting the waypoint's identity. It
// returns the workload it reached. It never dials in plaintext: what it
// forwards to passes upstreamRefusal, or the tunnel fails with the reason.
func (h *InboundHBONE) forward(ctx context.Context, snap *state.Snapshot, wt waypointTarget, t, client netip.AddrPort) (net.Conn, *state.Workload, error) {
	w, upstream := wt.dst, t
	if wt.svc != nil {
		target, err := h.tcpRoute(snap, wt, t)
		if err != nil {
			return nil, nil, err
		}
		if w, upstream, err = h.pickEndpoint(snap, target.waypointTarget, netip.AddrPortFrom(t.Addr(), target.port)); err != nil {
			return nil, nil, err
		}
	} else if err := h.upstreamRefusal(snap, wt.wp, w, upstream); err != nil {
		return nil, w, fmt.Errorf("waypoint: target %s (workload %s) %w", upstream, w.UID, err)
	}
	source, err := wt.wp.Identity()
	if err != nil {
		return nil, w, err
	}
	expected, err := w.Identity()
	if err != nil {
		return nil, w, err
	}
	tun := hbone.Tunnel{Source: source, Expected: []spiffeid.ID{expected}, Gateway: netip.AddrPortFrom(upstream.Addr(), HBONEPort),
		Authority: upstream.String(), ForwardedFor: client, ServerName: w.ServerName()}
	if wt.svc != nil {
		tun.ForwardedHost = wt.svc.Hostname
	}
	up, err := h.d.Tunnels.DialTunnel(ctx, tun)
	return up, w, err
}

// tcpRoute is where a connection for service target wt at t goes: the backend a TCPRoute attached to that
// service port picks by weight (docs/waypoint.md), or the service itself. A backend that cannot be used refuses
// the connection, as the Gateway API says.
func (h *InboundHBONE) tcpRoute(snap *state.Snapshot, wt waypointTarget, t netip.AddrPort) (routedTarget, error) {
	out := routedTarget{waypointTarget: wt, port: t.Port()}
	if h.d.Routes == nil {
		return out, nil
	}
	a, ok := h.d.Routes().TCPRoute(wt.svc.Namespace, wt.svc.Name, t.Port())
	if !ok {
		return out, nil
	}
	if a.Invalid != "" {
		return out, fmt.Errorf("waypoint: %s: %s", a.Route, a.Invalid)
	}
	b, ok := a.Pick(rand.IntN)
	switch {
	case !ok:
		return out, fmt.Errorf("waypoint: %s has no backend", a.Route)
	case b.Invalid != "":
		return out, fmt.Errorf("waypoint: %s: backend %s: %s", a.Route, b.Key(), b.Invalid)
	}
	svc, ok := snap.ServiceByKey(b.Key())
	if !ok {
		return out, fmt.Errorf("waypoint: %s: backend %s is not known", a.Route, b.Key())
	}
	out.svc, out.port = svc, b.Port
	return out, nil
}

// routedTarget is a service target after its TCPRoute: the service and port the connection goes to.
type routedTarget struct {
	waypointTarget
	port uint16
}

// pickEndpoint chooses the endpoint of the service target that port t.Port()
// goes to, and where it serves it. It draws only among the endpoints the
// waypoint may forward to, so that one it must refuse never wins the draw; a
// service with no other is refused with the first reason.
func (h *InboundHBONE) pickEndpoint(snap *state.Snapshot, wt waypointTarget, t netip.AddrPort) (*state.Workload, netip.AddrPort, error) {
	var allowed []*state.Endpoint
	var refused error
	n := 0
	for _, e := range wt.svc.Endpoints {
		port, ok := e.TargetPort(t.Port())
		if !ok {
			continue
		}
		up := netip.AddrPortFrom(sameFamily(e.Workload.Addresses, t.Addr()), port)
		if err := h.upstreamRefusal(snap, wt.wp, e.Workload, up); err != nil {
			if n++; refused == nil {
				refused = fmt.Errorf("waypoint: endpoint %s of service %s %w", up, wt.svc.Key(), err)
			}
			continue
		}
		allowed = append(allowed, e)
	}
	if len(allowed) == 0 && refused != nil {
		if n > 1 {
			refused = fmt.Errorf("%w (and %d more endpoints refused)", refused, n-1)
		}
		return nil, netip.AddrPort{}, refused
	}
	part := *wt.svc
	part.Endpoints = allowed
	e, port, ok := state.PickEndpoint(&part, t.Port(), nil, nil)
	if !ok {
		return nil, netip.AddrPort{}, fmt.Errorf("service %s has no healthy endpoint for port %d", wt.svc.Hostname, t.Port())
	}
	return e.Workload, netip.AddrPortFrom(sameFamily(e.Workload.Addresses, t.Addr()), port), nil
}

// upstreamRefusal says why the waypoint wp must not forward to workload w at
// upstream, nil when it may. Gossip declares addresses, ports and tunnels, so
// none of them is taken on trust: the waypoint reaches only captured
// workloads of its scope (over HBONE: the upstream must prove the workload's
// identity), never on one of the agent's own ports, never at an address that
// is not a remote workload's (loopback, link-local and the cloud's metadata
// service, multicast), nor at one of this host's own unless the workload runs
// here.
func (h *InboundHBONE) upstreamRefusal(snap *state.Snapshot, wp *state.Waypoint, w *state.Workload, upstream netip.AddrPort) error {
	a := upstream.Addr().Unmap()
	if w.Tunnel != state.TunnelHBONE {
		return errors.New("is not a captured workload (plaintext refused)")
	}
	if !inScope(wp, w) {
		return fmt.Errorf("is workload %s of namespace %s, outside the scope of waypoint %s", w.UID, w.Namespace, wp.Key())
	}
	if ports.Illegal(upstream.Port()) {
		return fmt.Errorf("is on port %d, one of the agent's own", upstream.Port())
	}
	if what := unreachable(a); what != "" {
		return fmt.Errorf("is %s", what)
	}
	if other, ok := snap.WaypointByAddr(a); ok && other.Local {
		return fmt.Errorf("is an address of waypoint %s on this host", other.Key())
	}
	if !w.Local && h.d.hostAddr(a) {
		return fmt.Errorf("is an address of this host, and workload %s does not run here", w.UID)
	}
	return nil
}

// nat64 is the well-known NAT64 prefix: its addresses carry an IPv4 address,
// which is what they reach.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// unreachable says what a is when it is never a remote workload's address
// ("a loopback address", ...), "" when it may be one.
func unreachable(a netip.Addr) string {
	if nat64.Contains(a) {
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	switch {
	case !a.IsValid():
		return "no address"
	case config.IsMetadata(a):
		return "the cloud metadata address"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsUnspecified(), a.Is4() && a.As4()[0] == 0: // 0.0.0.0/8, "this network"; 0.0.0.0 reaches this host
		return "an unspecified address"
	case a.IsLinkLocalUnicast():
		return "a link-local address"
	case a.IsMulticast():
		return "a multicast address"
	}
	return ""
}
