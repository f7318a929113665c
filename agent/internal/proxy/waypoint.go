package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// The waypoint role (spec/routing.md): tunnels that arrive on the address of
// a waypoint this host runs are for a service VIP or a workload the waypoint
// manages. They are authorized with the caller's identity against the
// policies attached to the waypoint or the service, then forwarded to the
// workload, or to one endpoint of the service, with the waypoint's identity.
// Anything the waypoint does not manage is refused: never an open proxy.

// waypointTarget is what one waypoint tunnel is for.
type waypointTarget struct {
	wp  *state.Waypoint
	svc *state.Service  // a service target
	dst *state.Workload // a workload target
	// pick is the service whose endpoints a service target is forwarded to:
	// svc itself when wp is the service's waypoint, else svc with only the
	// endpoints wp serves. The waypoint's identity reaches no one else.
	pick *state.Service
}

// authorizeWaypoint decides a tunnel that arrived on the address of wp.
func (h *InboundHBONE) authorizeWaypoint(req *hbone.Request, snap *state.Snapshot, wp *state.Waypoint) hbone.Decision {
	target := req.Target.Addr
	wt, err := managedTarget(snap, wp, target)
	if err != nil {
		return refuseAt(hbone.FlagWrongTarget, err)
	}
	// The caller is the peer of the tunnel: its identity and address. The one
	// exception is a hairpin (spec/routing.md), whose peer is the target's own
	// node presenting the target's identity on behalf of a plaintext client:
	// that client has no identity, and its address is in `forwarded`. Anyone
	// else's `forwarded` is the caller's word only, never a policy input.
	id, caller := req.PeerIdentity, netip.AddrPortFrom(req.RemoteAddr.Addr().Unmap(), req.RemoteAddr.Port())
	hairpin := hairpinned(req, wt)
	if hairpin {
		id, caller = spiffeid.ID{}, netip.AddrPortFrom(req.ForwardedFor.Addr().Unmap(), req.ForwardedFor.Port())
	}
	conn := policy.Conn{DestNamespace: wt.namespace(), DestIP: target.Addr(), DestPort: target.Port(),
		SourceIdentity: id, SourceIP: caller.Addr()}
	if wt.dst != nil {
		conn.DestLabels = wt.dst.Labels
	}
	at := wt.policyTarget()
	if dec := h.d.count(conn, h.d.Policy().EvaluateWaypoint(conn, at)); !dec.Allow {
		d := refuseAt(hbone.FlagDenied, errors.New(dec.String()))
		tag := d.Tag.(*inboundTag)
		tag.svc, tag.dst, tag.src, tag.anonymous = wt.svc, wt.dst, caller, hairpin
		return d
	}
	// The access log, and `forwarded` on the way on, show the caller as authorized.
	tag := &inboundTag{svc: wt.svc, dst: wt.dst, route: "waypoint", src: caller, anonymous: hairpin}
	d := hbone.Allow(target)
	d.Dial = func(ctx context.Context, t netip.AddrPort) (net.Conn, error) {
		up, w, err := h.forward(ctx, snap, wt, t, caller)
		if w != nil {
			tag.dst = w
		}
		return up, err
	}
	revoker := &hbone.Revoker{}
	tag.untrack = h.d.Live.addFunc(func(set *policy.Set) bool { return set.EvaluateWaypoint(conn, at).Allow },
		revoker.Revoke)
	d.Revoker = revoker
	d.Tag = tag
	return d
}

// hairpinned reports whether a waypoint tunnel is a hairpin: for a workload
// target, from a peer presenting that workload's identity (only its node holds
// it), with the plaintext client in `forwarded`. A workload that calls its own
// address through its waypoint is indistinguishable and is also treated as a
// client without identity.
func hairpinned(req *hbone.Request, wt waypointTarget) bool {
	if wt.dst == nil || !req.ForwardedFor.IsValid() {
		return false
	}
	id, err := wt.dst.Identity()
	return err == nil && id == req.PeerIdentity
}

// refuseAt refuses a waypoint tunnel; the tag marks its telemetry as the waypoint's.
func refuseAt(flag hbone.Flag, err error) hbone.Decision {
	d := hbone.Refuse(flag, err)
	d.Tag = &inboundTag{route: "waypoint"}
	return d
}

// managedTarget resolves a target the waypoint manages: a VIP of a service
// whose waypoint it is or that has an endpoint it serves, or the address of a
// workload it serves.
func managedTarget(snap *state.Snapshot, wp *state.Waypoint, target netip.AddrPort) (waypointTarget, error) {
	if svc, ok := snap.ServiceByVIP(target.Addr()); ok {
		pick := managedPart(snap, wp, svc)
		if pick == nil {
			return waypointTarget{}, fmt.Errorf("service %s is not managed by waypoint %s", svc.Hostname, wp.Key())
		}
		if !svc.HasPort(target.Port()) {
			return waypointTarget{}, fmt.Errorf("service %s has no port %d", svc.Hostname, target.Port())
		}
		return waypointTarget{wp: wp, svc: svc, pick: pick}, nil
	}
	if w, ok := snap.WorkloadFor(target); ok && isWaypoint(snap.WaypointOf(w), wp) { // by port on a shared address
		return waypointTarget{wp: wp, dst: w}, nil
	}
	return waypointTarget{}, fmt.Errorf("target %s is not a service or workload managed by waypoint %s", target, wp.Key())
}

// managedPart is what of svc the waypoint manages: all of it when wp is the
// service's waypoint, else (a service with no waypoint of its own, whose
// endpoints decide one by one) a copy with only the endpoints wp serves; nil
// when it serves none.
func managedPart(snap *state.Snapshot, wp *state.Waypoint, svc *state.Service) *state.Service {
	if isWaypoint(snap.ServiceWaypoint(svc), wp) {
		return svc
	}
	var mine []*state.Endpoint
	for _, e := range svc.Endpoints {
		if isWaypoint(snap.WaypointOf(e.Workload), wp) {
			mine = append(mine, e)
		}
	}
	if len(mine) == 0 {
		return nil
	}
	part := *svc
	part.Endpoints = mine
	return &part
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
// the service target, over HBONE when it is captured, presenting the
// waypoint's identity. It returns the workload it reached.
func (h *InboundHBONE) forward(ctx context.Context, snap *state.Snapshot, wt waypointTarget, t, client netip.AddrPort) (net.Conn, *state.Workload, error) {
	w, upstream := wt.dst, t
	if wt.svc != nil {
		e, port, ok := state.PickEndpoint(wt.pick, t.Port(), nil)
		if !ok {
			return nil, nil, fmt.Errorf("service %s has no healthy endpoint for port %d", wt.svc.Hostname, t.Port())
		}
		w, upstream = e.Workload, netip.AddrPortFrom(sameFamily(e.Workload.Addresses, t.Addr()), port)
	}
	if w.Tunnel != state.TunnelHBONE {
		up, err := h.d.Dialer.DialContext(ctx, "tcp", upstream.String())
		return up, w, err
	}
	source, err := wt.wp.Identity()
	if err != nil {
		return nil, w, err
	}
	expected, err := w.Identity()
	if err != nil {
		return nil, w, err
	}
	up, err := h.d.Tunnels.DialTunnel(ctx, Tunnel{Source: source, Expected: []spiffeid.ID{expected},
		Gateway: netip.AddrPortFrom(upstream.Addr(), HBONEPort), Target: upstream, Client: client, ServerName: w.ServerName()})
	return up, w, err
}
