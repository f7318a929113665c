package proxy

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/bufcopy"
	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
	"github.com/ambient-agent/ambient-agent/ports"
)

// InboundPlain is the inbound plaintext proxy on 15006: captured connections to
// local workloads that did not arrive over HBONE (clients outside the mesh).
type InboundPlain struct {
	l    *listener
	d    *Deps
	bufs *bufcopy.Pool // bulk buffers of hairpin tunnels
}

// NewInboundPlain serves captured inbound connections accepted on ln.
func NewInboundPlain(ln net.Listener, d *Deps) *InboundPlain {
	p := &InboundPlain{d: d, bufs: newBufPool()}
	p.l = newListener("inbound_plaintext", ln, d.Log, p.handle)
	p.l.limit, p.l.refused = d.InboundLimit, d.Refused
	return p
}

// Run serves until ctx is done, then drains.
func (p *InboundPlain) Run(ctx context.Context, drain func() (context.Context, context.CancelFunc)) error {
	return p.l.run(ctx, drain)
}

func (p *InboundPlain) handle(ctx context.Context, c net.Conn) {
	src := addrPort(c.RemoteAddr())
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	dst, err := capture.OriginalDst(tc)
	if err != nil {
		p.d.warn("inbound-origdst", "inbound plaintext: no original destination; closing", "src", src, "err", err)
		return
	}
	snap := p.d.Snap()
	w, ok := snap.LocalFor(dst)
	wps := p.hairpinWaypoints(snap, w)
	rec := p.record(snap, src, dst, w, len(wps) > 0)
	switch {
	case !ok:
		rec.Close(0, 0, telemetry.FlagNoRoute, "no local workload has the destination address")
		return
	case ports.Illegal(dst.Port()):
		rec.Close(0, 0, telemetry.FlagNoRoute, "destination is an agent port")
		return
	}
	// The node authorizes first, hairpin or not: a STRICT PeerAuthentication
	// or an ipBlocks rule is never bypassed through the waypoint.
	conn := authzConn(w, dst, spiffeid.ID{}, src.Addr())
	if dec := p.d.authorize(conn); !dec.Allow {
		reset(tc)
		rec.Close(0, 0, telemetry.FlagDeny, dec.String())
		return
	}
	if len(wps) > 0 {
		p.hairpin(ctx, tc, rec, conn, wps, src, dst)
		return
	}
	p.direct(ctx, tc, rec, conn, src, dst)
}

// record opens the telemetry record of a plaintext caller of w (nil: none
// has the address): no identity, whatever gossip says the source is.
func (p *InboundPlain) record(snap *state.Snapshot, src, dst netip.AddrPort, w *state.Workload, hairpin bool) *telemetry.Conn {
	srcW, _ := snap.WorkloadByAddr(src.Addr())
	route := "plaintext"
	if hairpin {
		route = "hairpin"
	}
	labels := connLabels(telemetry.ReporterDestination, srcW, "", w, "", false)
	if w != nil {
		withService(&labels, snap.InboundService(w, "", dst.Port()))
	}
	rec := p.d.Metrics.Open(p.d.Access,
		telemetry.ConnInfo{Direction: "inbound_plaintext", Src: src, Dst: dst, Route: route}, labels)
	return rec
}

// direct connects an authorized caller to the local workload, from the
// caller's own address when the agent shows applications their real client,
// and relays.
func (p *InboundPlain) direct(ctx context.Context, c *net.TCPConn, rec *telemetry.Conn, conn policy.Conn, src, dst netip.AddrPort) {
	up, err := p.d.dialFrom(ctx, src.Addr(), dst)
	if err != nil {
		rec.Close(0, 0, telemetry.FlagConnect, err.Error())
		return
	}
	live(rec, c)
	b, flag, reason := p.relayAuthorized(conn, c, up, nil) // TCP to TCP: splice, no buffers
	rec.Close(b.Sent, b.Received, flag, reason)
}

// relayAuthorized relays c and up for as long as conn stays allowed: a
// policy change that denies it resets c and closes up, and the flag and
// reason say so.
func (p *InboundPlain) relayAuthorized(conn policy.Conn, c *net.TCPConn, up net.Conn, bufs *bufcopy.Pool) (Bytes, telemetry.Flag, string) {
	revoked := make(chan struct{})
	untrack := p.d.Live.add(conn, func() { close(revoked); reset(c); up.Close() })
	b, err := relay(c, up, bufs)
	untrack()
	select {
	case <-revoked:
		return b, telemetry.FlagDeny, "closed: a policy change denies it now"
	default:
	}
	return b, telemetry.FlagNone, errString(err)
}

// reset closes c with a TCP RST: a denied client learns at once and nothing
// it sent is forwarded.
func reset(c *net.TCPConn) { abort(c) }

// hairpinWaypoints are the waypoint instances a plaintext caller of w is sent
// through under hairpin enforcement; none otherwise.
func (p *InboundPlain) hairpinWaypoints(snap *state.Snapshot, w *state.Workload) []*state.Waypoint {
	if _, on := p.d.hairpin(); w == nil || !on {
		return nil
	}
	return snap.WaypointOf(w)
}

// hairpin sends a plaintext caller of a waypoint-enabled workload through its
// waypoint (spec/routing.md): HBONE to the waypoint with the workload as
// target and the client in `forwarded`, presenting the host's hairpin
// identity, never the workload's (the waypoint would authorize an anonymous
// client as the workload). The waypoint authorizes that identity and tunnels
// back to the workload.
func (p *InboundPlain) hairpin(ctx context.Context, c *net.TCPConn, rec *telemetry.Conn, conn policy.Conn, wps []*state.Waypoint, src, dst netip.AddrPort) {
	wp := wps[rand.IntN(len(wps))]
	source, ok := p.d.hairpin()
	switch {
	case !ok:
		rec.Close(0, 0, telemetry.FlagNoRoute, "hairpin enforcement was turned off")
		return
	case source.IsZero(): // never the destination's identity: refused instead
		reset(c)
		rec.Close(0, 0, telemetry.FlagDeny, "hairpin enforcement without a hairpin identity ([policy] hairpin_service_account): refused")
		return
	}
	expected, err := wp.Identity()
	if err != nil {
		rec.Close(0, 0, telemetry.FlagNoRoute, "waypoint has no valid identity: "+err.Error())
		return
	}
	rec.Labels().DestinationPrincipal = expected.String()
	dctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	up, err := p.d.Tunnels.DialTunnel(dctx, hbone.Tunnel{Source: source, Expected: []spiffeid.ID{expected},
		Gateway: netip.AddrPortFrom(sameFamily(wp.Addresses, dst.Addr()), HBONEPort), Authority: dst.String(), ForwardedFor: src})
	cancel()
	if err != nil {
		rec.Close(0, 0, responseFlag(err, telemetry.FlagConnect), "hairpin to waypoint "+wp.Key()+": "+err.Error())
		return
	}
	live(rec, c)
	// The node's authorization stands for the connection's life: a policy
	// change that denies it closes it, as for a direct plaintext caller.
	b, flag, reason := p.relayAuthorized(conn, c, up, p.bufs)
	rec.Close(b.Sent, b.Received, flag, reason)
}
