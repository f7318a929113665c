package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
	"github.com/ambient-agent/ambient-agent/ports"
)

// InboundHBONE is the handler of the HBONE server (15008): every tunnel it
// receives is for a local workload on the address the tunnel arrived on, or
// for a service or workload a local waypoint manages (waypoint.go). It
// connects nowhere else: never an open proxy.
type InboundHBONE struct {
	d   *Deps
	ids identity.Source
	// l7srv is the waypoint's HTTP server, started by the first L7 tunnel (l7).
	l7Once sync.Once
	l7srv  *l7Server
}

// NewInboundHBONE returns the handler of the HBONE server, presenting the
// certificates of ids.
func NewInboundHBONE(d *Deps, ids identity.Source) *InboundHBONE {
	return &InboundHBONE{d: d, ids: ids}
}

// inboundTunnel is what the record of one inbound tunnel shows, filled in as
// the tunnel is decided.
type inboundTunnel struct {
	dst   *state.Workload
	svc   *state.Service // the service target, at a waypoint
	route string         // "hbone", or "waypoint" for the waypoint role
	// src is the caller as the waypoint role authorized it (the tunnel's
	// peer, or an old-style hairpin's client, which has no identity:
	// anonymous); zero elsewhere.
	src       netip.AddrPort
	anonymous bool
	// target is where the tunnel goes on this host: the request's address, or for a service hostname (double
	// HBONE) the local endpoint's; clientNetwork: the client came through its network's gateway from this
	// network ("" when it did not).
	target        netip.AddrPort
	clientNetwork string
}

// ServeHBONE runs one inbound tunnel (spec/routing.md, inbound over HBONE):
// find the local workload, authorize the caller, connect to the workload,
// answer, relay, record.
func (h *InboundHBONE) ServeHBONE(r *hbone.Request) {
	snap := h.d.Snap()
	if h.d.Gateway.serves(r.LocalAddr.Addr()) {
		h.serveGateway(r, snap)
		return
	}
	wp, atWaypoint := snap.WaypointByAddr(r.LocalAddr.Addr())
	atWaypoint = atWaypoint && wp.Local
	t := &inboundTunnel{route: "hbone", target: r.Target.Addr}
	if r.Target.IsHostname() {
		if atWaypoint {
			h.refuse(r, snap, t, hbone.FlagBadRequest, errors.New("hostname targets (double HBONE) at a waypoint are not supported"))
			return
		}
		target, svc, flag, err := serviceTarget(r, snap)
		if err != nil {
			h.refuse(r, snap, t, flag, err)
			return
		}
		t.target, t.svc = target, svc
	}
	if atWaypoint {
		h.serveWaypoint(r, snap, wp)
		return
	}
	w, flag, err := h.target(r, snap, t.target)
	t.dst = w
	if err != nil {
		h.refuse(r, snap, t, flag, err)
		return
	}
	// A client on another network came through its gateway (double HBONE): the TCP peer is the gateway, not
	// the client. Telemetry only: policy sees the inner session's identity and the gateway's address, as in
	// ztunnel.
	if n := r.Header(forwardedNetworkHeader); n != "" && n != w.Network {
		t.clientNetwork = n
	}
	conn := authzConn(w, t.target, r.PeerIdentity, r.RemoteAddr.Addr().Unmap())
	if dec := h.d.authorize(conn); !dec.Allow {
		h.refuse(r, snap, t, hbone.FlagDenied, errors.New(dec.String()))
		return
	}
	revoker := &hbone.Revoker{}
	unregister := h.d.Live.add(conn, revoker.Revoke)
	var up net.Conn
	handedOff := false // to the relay, which then closes up and unregisters
	defer func() {
		if !handedOff { // refused, failed, or a panic on the way
			if up != nil {
				up.Close()
			}
			unregister()
		}
	}()
	up, err = h.dialLocal(r.Context(), r.RemoteAddr.Addr(), t.target)
	if err != nil {
		h.failed(r, snap, t, r.RefuseDial(t.target, err))
		return
	}
	handedOff = h.relay(r, snap, t, up, baggage(w), revoker, unregister)
}

// forwardedNetworkHeader carries the client's network on the inner CONNECT of double HBONE.
const forwardedNetworkHeader = "x-forwarded-network"

// serviceTarget is where a tunnel to a service hostname goes on this host (double HBONE: the client is on
// another network and came through this network's gateway; spec/routing.md, "Inbound over HBONE"): the local
// workload on the address the connection arrived on whose certificate the handshake presented, if it backs the
// service, on the port it serves the service port on (its endpoint's mapping, else the service's target port).
func serviceTarget(r *hbone.Request, snap *state.Snapshot) (netip.AddrPort, *state.Service, hbone.Flag, error) {
	local := r.LocalAddr.Addr().Unmap()
	svc, ok := snap.ServiceByHostname(r.Target.Host)
	if !ok {
		return netip.AddrPort{}, nil, hbone.FlagWrongTarget, fmt.Errorf("no service %s", r.Target.Host)
	}
	for _, e := range svc.Endpoints {
		w := e.Workload
		if w == nil || !w.Local || !slices.Contains(w.Addresses, local) {
			continue
		}
		if id, err := w.Identity(); err != nil || id != r.LocalIdentity {
			continue
		}
		port, ok := e.TargetPort(r.Target.Port)
		if !ok {
			port = svc.TargetPort(r.Target.Port)
		}
		if port == 0 {
			return netip.AddrPort{}, svc, hbone.FlagUnknownWorkload, fmt.Errorf("workload %s serves no port %d of service %s", w.Name, r.Target.Port, svc.Hostname)
		}
		return netip.AddrPortFrom(local, port), svc, hbone.FlagNone, nil
	}
	return netip.AddrPort{}, svc, hbone.FlagWrongTarget, fmt.Errorf("service %s has no endpoint on %s presenting %s", svc.Hostname, local, r.LocalIdentity)
}

// target is the local workload a tunnel to target is for: the one serving the target address and port, which
// must be the address the tunnel arrived on and the workload whose certificate the handshake presented.
func (h *InboundHBONE) target(r *hbone.Request, snap *state.Snapshot, target netip.AddrPort) (*state.Workload, hbone.Flag, error) {
	if target.Addr() != r.LocalAddr.Addr().Unmap() {
		return nil, hbone.FlagWrongTarget, fmt.Errorf("target %s is not the address the connection arrived on (%s)", target.Addr(), r.LocalAddr.Addr())
	}
	w, ok := snap.LocalFor(target)
	if !ok {
		return nil, hbone.FlagUnknownWorkload, fmt.Errorf("no local workload has address %s", target.Addr())
	}
	if err := presented(w, r, target); err != nil {
		return w, hbone.FlagWrongTarget, err
	}
	if err := h.bypassed(snap, w, r.PeerIdentity); err != nil {
		return w, hbone.FlagDenied, err
	}
	return w, hbone.FlagNone, nil
}

// dialLocal connects to a local workload from the tunnel's peer (the HBONE
// client's TCP address, never its `forwarded` word, as ztunnel), when the
// agent shows applications their real client.
func (h *InboundHBONE) dialLocal(ctx context.Context, peer netip.Addr, target netip.AddrPort) (net.Conn, error) {
	if ports.Illegal(target.Port()) { // hbone refused the authority already: never the agent itself
		return nil, fmt.Errorf("%s is on one of the agent's own ports", target)
	}
	return h.d.dialFrom(ctx, peer, target)
}

// relay answers 200 with the destination's baggage and relays the tunnel to up until it ends, a policy change
// revokes it, or the client goes away; then it closes up, calls unregister (the tunnel leaves the live
// connections) and records. It returns at once: the relay runs on a goroutine of its own (hbone's RelayAsync),
// whose stack holds only the relay. It reports whether the relay took up and unregister over; if not (the
// answer failed), the caller still owns them.
func (h *InboundHBONE) relay(r *hbone.Request, snap *state.Snapshot, t *inboundTunnel, up net.Conn, b hbone.Baggage, revoker *hbone.Revoker, unregister func()) bool {
	if err := r.Accept(b); err != nil {
		h.failed(r, snap, t, err)
		return false
	}
	rec := h.record(r.Info(), snap, t)
	// Inbound, the peer is the client: what came from it is the request side.
	rec.Live(func() (int64, int64) { sent, received := r.Bytes(); return received, sent })
	r.RelayAsync(up, revoker, func(s hbone.TunnelStats) {
		up.Close()
		unregister()
		rec.Close(s.BytesReceived, s.BytesSent, istioFlag(s.Flag), errString(s.Err))
	})
	return true
}

// refuse answers the request with the flag's status and records it.
func (h *InboundHBONE) refuse(r *hbone.Request, snap *state.Snapshot, t *inboundTunnel, flag hbone.Flag, err error) {
	h.failed(r, snap, t, r.Refuse(flag, err))
}

// failed records a tunnel that was refused, or could not be set up.
func (h *InboundHBONE) failed(r *hbone.Request, snap *state.Snapshot, t *inboundTunnel, err error) {
	h.record(r.Info(), snap, t).Close(0, 0, istioFlag(hbone.FlagOf(err)), errString(err))
}

// Refused records a connection or request the server refused before any
// ServeHBONE: a failed handshake, a malformed request, a limit.
func (h *InboundHBONE) Refused(info *hbone.TunnelInfo, flag hbone.Flag, err error) {
	h.record(info, h.d.Snap(), &inboundTunnel{route: "hbone"}).Close(0, 0, istioFlag(flag), errString(err))
}

// record opens the telemetry record of a tunnel: Istio's labels as the
// destination's reporter, the source workload only when its identity is the
// one the certificate proved.
func (h *InboundHBONE) record(info *hbone.TunnelInfo, snap *state.Snapshot, t *inboundTunnel) *telemetry.Conn {
	dst, svc := t.dst, t.svc
	if dst == nil {
		dst, _ = snap.LocalByAddr(info.Local.Addr())
	}
	peer := ""
	if !info.Peer.IsZero() && !t.anonymous {
		peer = info.Peer.String()
	}
	src := info.Remote
	switch {
	case t.src.IsValid():
		src = t.src
	case info.ForwardedFor.IsValid():
		src = info.ForwardedFor
	}
	var srcW *state.Workload
	switch {
	case t.clientNetwork == "":
		srcW, _ = snap.WorkloadByAddr(src.Addr())
	case info.ForwardedFor.IsValid(): // through a gateway: the client's address on its own network, as it says
		srcW, _ = snap.WorkloadOn(t.clientNetwork, src.Addr())
	}
	if srcW != nil && principal(srcW) != peer {
		srcW = nil // gossip says who is where; only the certificate says who it is
	}
	dstAddr := info.Target
	if !dstAddr.IsValid() {
		dstAddr = t.target
	}
	if !dstAddr.IsValid() {
		dstAddr = info.Local
	}
	if svc == nil && dst != nil && dst.Local {
		svc = snap.InboundService(dst, info.ForwardedHost, dstAddr.Port())
	}
	labels := connLabels(telemetry.ReporterDestination, srcW, peer, dst, "", true)
	withService(&labels, svc)
	return h.d.Metrics.Open(h.d.Access,
		telemetry.ConnInfo{Direction: "inbound", Src: src, Dst: dstAddr, Route: t.route}, labels)
}

// Certificate is the server's certificate choice: the identity of the
// waypoint or local workload that owns the address a connection arrived on;
// among workloads that share the address, the one the SNI names, else the
// address's primary workload (a client without SNI, such as a ztunnel).
func (h *InboundHBONE) Certificate(a netip.Addr, serverName string) (spiffeid.ID, *tls.Config, error) {
	if g := h.d.Gateway; g.serves(a) {
		cfg, err := identity.ServerConfig(h.ids, g.Identity)
		return g.Identity, cfg, err
	}
	id, err := localIdentity(h.d.Snap(), a, serverName)
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	cfg, err := identity.ServerConfig(h.ids, id)
	return id, cfg, err
}

func localIdentity(snap *state.Snapshot, a netip.Addr, serverName string) (spiffeid.ID, error) {
	if wp, ok := snap.WaypointByAddr(a); ok && wp.Local {
		return wp.Identity()
	}
	w, ok := snap.LocalByServerName(a, serverName)
	if !ok {
		w, ok = snap.LocalByAddr(a)
	}
	if !ok {
		return spiffeid.ID{}, fmt.Errorf("no local workload owns %s", a)
	}
	return w.Identity()
}

// presented refuses a tunnel for a workload other than the one whose
// certificate the TLS handshake presented: on an address several workloads
// share, the client verified that identity, not the target port's owner's.
func presented(w *state.Workload, r *hbone.Request, target netip.AddrPort) error {
	want, err := w.Identity()
	if err == nil && r.LocalIdentity == want {
		return nil
	}
	return fmt.Errorf("port %d of %s is served by workload %s (%s), but the handshake presented %s (SNI %q)",
		target.Port(), target.Addr(), w.Name, want, r.LocalIdentity, r.ServerName)
}

// bypassed refuses, under hairpin enforcement, an HBONE caller of a
// waypoint-enabled local workload that is not its waypoint: the caller went
// around the waypoint, and its identity cannot be carried through a hairpin.
func (h *InboundHBONE) bypassed(snap *state.Snapshot, w *state.Workload, peer spiffeid.ID) error {
	if _, on := h.d.hairpin(); !on {
		return nil
	}
	wps := snap.WaypointOf(w)
	if len(wps) == 0 {
		return nil
	}
	// The snapshot's slices are shared: never append to them.
	if isIdentityOf(peer, append(slices.Clip(wps), serviceWaypoints(snap, w)...)) {
		return nil
	}
	return fmt.Errorf("bypassed waypoint: %s is served by waypoint %s and %s is not it", w.Name, wps[0].Key(), idString(peer))
}

// isIdentityOf reports whether id is the identity of one of the waypoints.
func isIdentityOf(id spiffeid.ID, wps []*state.Waypoint) bool {
	return slices.ContainsFunc(wps, func(wp *state.Waypoint) bool {
		wid, err := wp.Identity()
		return err == nil && wid == id
	})
}

// serviceWaypoints are the waypoints of the services local workload w backs:
// a service's waypoint forwards to its endpoints directly, whatever their own
// waypoint.
func serviceWaypoints(snap *state.Snapshot, w *state.Workload) []*state.Waypoint {
	var out []*state.Waypoint
	for _, svc := range snap.BackedBy(w) {
		out = append(out, snap.BoundWaypoints(svc)...)
	}
	return out
}
