package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
)

// HBONEClient opens tunnels through the hbone pool with the local workloads'
// certificates.
type HBONEClient struct {
	Pool *hbone.Pool
	IDs  identity.Source
}

// DialTunnel opens one HBONE stream for t.
func (c *HBONEClient) DialTunnel(ctx context.Context, t Tunnel) (net.Conn, error) {
	if c.IDs == nil {
		return nil, &RouteError{Route: Route{Kind: RouteDrop, Reason: "this host holds no identity"}}
	}
	key := hbone.NewPoolKey(t.Source, t.Expected, t.Gateway, t.Client.Addr())
	dst := hbone.Destination{Key: key, TLS: func() (*tls.Config, error) {
		cfg := identity.ClientTLSConfig(c.IDs, t.Source, t.Expected)
		cfg.ServerName = t.ServerName
		return cfg, nil
	}}
	req := hbone.ConnectRequest{Authority: t.Target.String(), ForwardedFor: t.Client, ForwardedHost: t.Host, Baggage: baggage(t.SourceWorkload)}
	s, err := c.Pool.Dial(ctx, dst, req)
	if err != nil {
		return nil, tunnelError{err}
	}
	return s, nil
}

// tunnelError carries hbone's failure flag as an Istio response flag.
type tunnelError struct{ err error }

func (e tunnelError) Error() string        { return e.err.Error() }
func (e tunnelError) Unwrap() error        { return e.err }
func (e tunnelError) ResponseFlag() string { return istioFlag(hbone.FlagOf(e.err)) }

// istioFlag maps hbone's failure vocabulary onto Istio's response flags.
func istioFlag(f hbone.Flag) string {
	switch f {
	case hbone.FlagNone:
		return telemetry.FlagNone
	case hbone.FlagDenied, hbone.FlagRevoked:
		return telemetry.FlagDeny
	case hbone.FlagTLS:
		return telemetry.FlagTLSFailure
	}
	// Everything else (a failed dial, an upstream that did not answer, a reset,
	// a refused request) is a connection that could not be made: Istio's
	// vocabulary is closed, and hbone's own names never become label values.
	return telemetry.FlagConnect
}

func baggage(w *state.Workload) hbone.Baggage {
	if w == nil {
		return hbone.Baggage{}
	}
	return hbone.Baggage{
		ClusterName:      w.ClusterID,
		Namespace:        w.Namespace,
		WorkloadName:     telemetry.WorkloadName(w.Labels, w.Name),
		ServiceName:      telemetry.CanonicalService(w.Labels, telemetry.WorkloadName(w.Labels, w.Name)),
		ServiceVersion:   telemetry.CanonicalRevision(w.Labels),
		Region:           w.Locality.Region,
		AvailabilityZone: w.Locality.Zone,
	}
}

// InboundHBONE decides the tunnels the HBONE server (15008) receives and
// records their telemetry. It connects only to a local workload on the
// address the tunnel arrived on: never an open proxy.
type InboundHBONE struct{ d *Deps }

// NewInboundHBONE returns the decision callback and telemetry of the server.
func NewInboundHBONE(d *Deps) *InboundHBONE { return &InboundHBONE{d: d} }

// LocalIdentity is the server's certificate choice: the identity of the
// waypoint or local workload that owns the address a connection arrived on;
// among workloads that share the address, the one the SNI names, else the
// address's primary workload (a client without SNI, such as a ztunnel).
func (h *InboundHBONE) LocalIdentity(a netip.Addr, serverName string) (spiffeid.ID, bool) {
	snap := h.d.Snap()
	if wp, ok := snap.WaypointByAddr(a); ok && wp.Local {
		id, err := wp.Identity()
		return id, err == nil
	}
	w, ok := snap.LocalByServerName(a, serverName)
	if !ok {
		w, ok = snap.LocalByAddr(a)
	}
	if !ok {
		return spiffeid.ID{}, false
	}
	id, err := w.Identity()
	return id, err == nil
}

// inboundTag travels from Authorize to the telemetry callbacks.
type inboundTag struct {
	dst   *state.Workload
	svc   *state.Service // the service target, at a waypoint
	route string         // "hbone", or "waypoint" for the waypoint role
	// src is the caller as the waypoint role authorized it (the tunnel's
	// peer, or an old-style hairpin's client, which has no identity:
	// anonymous); zero elsewhere.
	src       netip.AddrPort
	anonymous bool
	rec       *telemetry.Conn
	untrack   func() // stops re-evaluation once the tunnel is over
}

// Authorize is the hbone server's callback (spec/routing.md, inbound over HBONE).
func (h *InboundHBONE) Authorize(ctx context.Context, req *hbone.Request) hbone.Decision {
	if req.Target.IsHostname() {
		return hbone.Refuse(hbone.FlagBadRequest, errors.New("hostname targets (double HBONE) are not supported"))
	}
	snap := h.d.Snap()
	if wp, ok := snap.WaypointByAddr(req.LocalAddr.Addr()); ok && wp.Local {
		return h.authorizeWaypoint(req, snap, wp)
	}
	target := req.Target.Addr
	if target.Addr() != req.LocalAddr.Addr().Unmap() {
		return hbone.Refuse(hbone.FlagWrongTarget, fmt.Errorf("target %s is not the address the connection arrived on (%s)", target.Addr(), req.LocalAddr.Addr()))
	}
	w, ok := snap.LocalFor(target)
	if !ok {
		return hbone.Refuse(hbone.FlagUnknownWorkload, fmt.Errorf("no local workload has address %s", target.Addr()))
	}
	if err := h.presented(w, req); err != nil {
		return hbone.Refuse(hbone.FlagWrongTarget, err)
	}
	if err := h.bypassed(snap, w, req.PeerIdentity); err != nil {
		return hbone.Refuse(hbone.FlagDenied, err)
	}
	conn := authzConn(w, target, req.PeerIdentity, req.RemoteAddr.Addr().Unmap())
	if dec := h.d.authorize(conn); !dec.Allow {
		return hbone.Refuse(hbone.FlagDenied, errors.New(dec.String()))
	}
	d := hbone.Allow(target)
	d.Baggage = baggage(w)
	d.Dial = func(ctx context.Context, t netip.AddrPort) (net.Conn, error) {
		return h.d.Dialer.DialContext(ctx, "tcp", t.String())
	}
	revoker := &hbone.Revoker{}
	tag := &inboundTag{dst: w, route: "hbone"}
	tag.untrack = h.d.Live.add(conn, revoker.Revoke)
	d.Revoker = revoker
	d.Tag = tag
	return d
}

// Telemetry adapts hbone's tunnel events to Istio's metrics and the access log.
func (h *InboundHBONE) Telemetry() hbone.Telemetry { return inboundTelemetry{h} }

type inboundTelemetry struct{ h *InboundHBONE }

func (t inboundTelemetry) open(info *hbone.TunnelInfo) *telemetry.Conn {
	var dst *state.Workload
	var svc *state.Service
	route := "hbone"
	tag, _ := info.Tag.(*inboundTag)
	if tag != nil {
		dst, svc, route = tag.dst, tag.svc, tag.route
	}
	snap := t.h.d.Snap()
	if dst == nil {
		dst, _ = snap.LocalByAddr(info.Local.Addr())
	}
	peer := ""
	if !info.Peer.IsZero() && (tag == nil || !tag.anonymous) {
		peer = info.Peer.String()
	}
	src := info.Remote
	switch {
	case tag != nil && tag.src.IsValid():
		src = tag.src
	case info.ForwardedFor.IsValid():
		src = info.ForwardedFor
	}
	srcW, _ := snap.WorkloadByAddr(src.Addr())
	if srcW != nil && principal(srcW) != peer {
		srcW = nil // gossip says who is where; only the certificate says who it is
	}
	dstAddr := info.Target
	if !dstAddr.IsValid() {
		dstAddr = info.Local
	}
	if svc == nil && dst != nil && dst.Local {
		svc = snap.InboundService(dst, info.ForwardedHost, dstAddr.Port())
	}
	labels := connLabels(telemetry.ReporterDestination, srcW, peer, dst, "", true)
	withService(&labels, svc)
	return t.h.d.Metrics.Open(t.h.d.Access,
		telemetry.ConnInfo{Direction: "inbound", Src: src, Dst: dstAddr, Route: route}, labels)
}

func (t inboundTelemetry) TunnelOpened(info *hbone.TunnelInfo) {
	if tag, ok := info.Tag.(*inboundTag); ok {
		tag.rec = t.open(info)
		if bytes := info.Bytes; bytes != nil {
			// Inbound, the peer is the client: what came from it is the request side.
			tag.rec.Live(func() (int64, int64) { sent, received := bytes(); return received, sent })
		}
	}
}

func (t inboundTelemetry) TunnelClosed(info *hbone.TunnelInfo, s hbone.TunnelStats) {
	tag, ok := info.Tag.(*inboundTag)
	if !ok {
		return
	}
	if tag.untrack != nil {
		tag.untrack()
	}
	if tag.rec == nil {
		return
	}
	// Inbound, the peer is the client: what it sent us is the request side.
	tag.rec.Close(s.BytesReceived, s.BytesSent, istioFlag(s.Flag), errString(s.Err))
}

func (t inboundTelemetry) TunnelFailed(info *hbone.TunnelInfo, flag hbone.Flag, err error) {
	if tag, ok := info.Tag.(*inboundTag); ok && tag.untrack != nil {
		tag.untrack()
	}
	t.open(info).Close(0, 0, istioFlag(flag), errString(err))
}

// presented refuses a tunnel for a workload other than the one whose
// certificate the TLS handshake presented: on an address several workloads
// share, the client verified that identity, not the target port's owner's.
func (h *InboundHBONE) presented(w *state.Workload, req *hbone.Request) error {
	id, ok := h.LocalIdentity(req.LocalAddr.Addr().Unmap(), req.ServerName)
	want, err := w.Identity()
	if !ok || err != nil || id == want {
		return nil
	}
	return fmt.Errorf("port %d of %s is served by workload %s (%s), but the handshake presented %s (SNI %q)",
		req.Target.Addr.Port(), req.Target.Addr.Addr(), w.Name, want, id, req.ServerName)
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
	for _, wp := range append(slices.Clip(wps), serviceWaypoints(snap, w)...) {
		if id, err := wp.Identity(); err == nil && id == peer {
			return nil
		}
	}
	return fmt.Errorf("bypassed waypoint: %s is served by waypoint %s and %s is not it", w.Name, wps[0].Key(), idString(peer))
}

// serviceWaypoints are the waypoints of the services w backs: a service's
// waypoint forwards to its endpoints directly, whatever their own waypoint.
func serviceWaypoints(snap *state.Snapshot, w *state.Workload) []*state.Waypoint {
	var out []*state.Waypoint
	for _, svc := range snap.Services() {
		for _, e := range svc.Endpoints {
			if e.Workload == w {
				out = append(out, snap.BoundWaypoints(svc)...)
				break
			}
		}
	}
	return out
}
