package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/bufcopy"
	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
	"github.com/ambient-agent/ambient-agent/ports"
)

// ConnectTimeout bounds every upstream connect of the data path.
const ConnectTimeout = 10 * time.Second

// TunnelDialer opens HBONE streams (the hbone client pool). Errors should
// carry a response flag through ResponseFlag.
type TunnelDialer interface {
	DialTunnel(ctx context.Context, t hbone.Tunnel) (net.Conn, error)
}

// DoubleDialer opens double-HBONE tunnels (hbone.Pool.DialDouble); a TunnelDialer that is not one cannot reach
// other networks.
type DoubleDialer interface {
	DialDouble(ctx context.Context, outer, inner hbone.Tunnel, network string) (net.Conn, error)
}

// dialDouble opens the tunnel of a route to another network: both requests name the service,
// "hostname:port", and carry the same headers; the inner one adds the client's network.
func (o *Outbound) dialDouble(ctx context.Context, r Route, inner hbone.Tunnel) (net.Conn, error) {
	dd, ok := o.d.Tunnels.(DoubleDialer)
	if !ok || r.Service == nil {
		return nil, &RouteError{Route: Route{Kind: RouteDrop, Reason: "this agent cannot open double HBONE"}}
	}
	inner.Authority = r.Service.Hostname + ":" + strconv.Itoa(int(r.Target.Port()))
	outer := *r.Outer
	outer.Authority, outer.ForwardedFor, outer.ForwardedHost, outer.Baggage = inner.Authority, inner.ForwardedFor, inner.ForwardedHost, inner.Baggage
	return dd.DialDouble(ctx, outer, inner, r.Network)
}

// FlagError is an error that knows its response flag.
type FlagError interface {
	error
	ResponseFlag() telemetry.Flag
}

// Outbound is the outbound proxy on 15001: it receives the captured TCP
// connections of local processes and routes them.
type Outbound struct {
	l    *listener
	d    *Deps
	bufs *bufcopy.Pool // bulk buffers of the copies into tunnels
	// workload is the UID of the local workload whose processes capture sends
	// to this listener; "" for the default listener (15001).
	workload string
}

// NewOutbound serves captured outbound connections accepted on ln.
func NewOutbound(ln net.Listener, d *Deps) *Outbound {
	return NewWorkloadOutbound(ln, d, "")
}

// NewWorkloadOutbound serves the captured outbound connections of one local
// workload's processes (recognised by capture and sent to their own port):
// they present that workload's identity.
func NewWorkloadOutbound(ln net.Listener, d *Deps, workloadUID string) *Outbound {
	o := &Outbound{d: d, bufs: newBufPool(), workload: workloadUID}
	name := "outbound"
	if workloadUID != "" {
		name = "outbound:" + workloadUID
	}
	o.l = newListener(name, ln, d.Log, o.handle)
	o.l.limit, o.l.refused = d.OutboundLimit, d.Refused
	return o
}

// Run serves until ctx is done, then drains.
func (o *Outbound) Run(ctx context.Context, drain func() (context.Context, context.CancelFunc)) error {
	return o.l.run(ctx, drain)
}

// Close stops accepting; for a listener that never ran.
func (o *Outbound) Close() error { return o.l.ln.Close() }

func (o *Outbound) handle(ctx context.Context, c net.Conn) {
	rec, up := o.open(ctx, c)
	if up == nil {
		return
	}
	b, err := relay(c, up, o.bufs)
	rec.Close(b.Sent, b.Received, telemetry.FlagNone, errString(err))
}

// open decides where a captured connection goes, opens its record and connects; nil when it goes nowhere (the
// record, if any, is closed). It is apart from handle, and not inlined, so that its large frame is gone from the
// stack of the goroutine that then relays for the connection's whole life: that stack can shrink to 4 KiB.
//
//go:noinline
func (o *Outbound) open(ctx context.Context, c net.Conn) (*telemetry.Conn, net.Conn) {
	src := addrPort(c.RemoteAddr())
	tc, ok := c.(*net.TCPConn)
	if !ok || !addrPort(c.LocalAddr()).Addr().IsLoopback() {
		// Only captured local traffic arrives on loopback; a peer reaching
		// 15001 over the network is not ours to proxy.
		return nil, nil
	}
	dst, err := capture.OriginalDst(tc)
	if err != nil {
		o.d.warn("outbound-origdst", "outbound: no original destination; closing", "src", src, "err", err)
		return nil, nil
	}
	snap := o.d.Snap()
	srcW := o.source(snap, src)
	route := DecideOutboundFrom(snap, srcW, src, dst)
	labels := connLabels(telemetry.ReporterSource, srcW, idString(route.Source), route.Dest, "", route.Kind == RouteHBONE)
	withService(&labels, route.Service)
	if route.Waypoint != nil && labels.DestinationPrincipal == "" {
		if id, err := route.Waypoint.Identity(); err == nil {
			labels.DestinationPrincipal = id.String()
		}
	}
	info := telemetry.ConnInfo{Direction: "outbound", Src: src, Dst: dst, Route: route.Kind.String()}
	if route.Waypoint != nil {
		info.Route = "waypoint"
	}
	rec := o.d.Metrics.Open(o.d.Access, info, labels)
	if route.Hostname != "" {
		o.d.Metrics.ResolvedOnDemand(&labels, route.Hostname)
	}
	up, err := o.connect(ctx, route, src, srcW)
	if err == nil {
		live(rec, c)
	}
	if err != nil {
		rec.Close(0, 0, responseFlag(err, telemetry.FlagConnect), err.Error())
		return nil, nil
	}
	return rec, up
}

func (o *Outbound) connect(ctx context.Context, r Route, src netip.AddrPort, srcW *state.Workload) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	if r.Hostname != "" {
		if ports.Illegal(r.Target.Port()) {
			return nil, &RouteError{Route: Route{Reason: fmt.Sprintf("%s: port %d is one of the agent's own", r.Hostname, r.Target.Port())}}
		}
		a, err := o.d.resolve(ctx, r.Hostname, src.Addr().Is4())
		if err != nil {
			return nil, &RouteError{Route: Route{Reason: err.Error(), Flag: telemetry.FlagNoRoute}}
		}
		r.Target = netip.AddrPortFrom(a, r.Target.Port())
		r.Gateway = netip.AddrPortFrom(a, r.Gateway.Port())
	}
	switch r.Kind {
	case RouteHBONE:
		if brokenOutbound != nil {
			brokenOutbound(o, r)
		}
		t := r.Tunnel
		t.Authority, t.ForwardedFor, t.Baggage = r.Target.String(), src, baggage(srcW)
		if r.Service != nil {
			t.ForwardedHost = r.Service.Hostname
		}
		if r.Outer != nil {
			return o.dialDouble(ctx, r, t)
		}
		return o.d.Tunnels.DialTunnel(ctx, t)
	case RoutePlain, RoutePassthrough:
		return o.d.Dialer.DialContext(ctx, "tcp", r.Target.String())
	}
	return nil, &RouteError{Route: r}
}

// source is the local workload that opened a connection from src: this
// listener's workload, else the configured default workload, else the owner
// of the source address, else the host's first workload, skipping workloads
// recognised by their processes (their identity is theirs only); nil when
// none is left.
func (o *Outbound) source(snap *state.Snapshot, src netip.AddrPort) *state.Workload {
	uid := o.workload
	if uid == "" {
		uid = o.d.current().DefaultWorkload
	}
	if uid != "" {
		if w, ok := snap.WorkloadByUID(uid); ok && w.Local {
			return w
		}
	}
	return defaultSource(snap, src.Addr(), func(uid string) bool { return o.d.Recognised[uid] })
}

// RouteError is a connection the route refused to carry.
type RouteError struct{ Route Route }

func (e *RouteError) Error() string { return "dropped: " + e.Route.Reason }

// ResponseFlag marks a dropped connection as having no route.
func (e *RouteError) ResponseFlag() telemetry.Flag {
	if e.Route.Flag != "" {
		return e.Route.Flag
	}
	return telemetry.FlagNoRoute
}

func responseFlag(err error, def telemetry.Flag) telemetry.Flag {
	var fe FlagError
	if errors.As(err, &fe) {
		return fe.ResponseFlag()
	}
	return def
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func idString(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
