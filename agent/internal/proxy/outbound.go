package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// ConnectTimeout bounds every upstream connect of the data path.
const ConnectTimeout = 10 * time.Second

// Tunnel is one HBONE stream to open.
type Tunnel struct {
	Source   spiffeid.ID    // the local identity to present
	Expected []spiffeid.ID  // identities the peer may present
	Gateway  netip.AddrPort // the peer's HBONE address (ip:15008)
	Target   netip.AddrPort // the :authority
	Client   netip.AddrPort // the original client, for `forwarded`
}

// TunnelDialer opens HBONE streams (the hbone client pool).
type TunnelDialer interface {
	DialTunnel(ctx context.Context, t Tunnel) (net.Conn, error)
}

// Outbound is the outbound proxy on 15001: it receives the captured TCP
// connections of local processes and routes them.
type Outbound struct {
	l       *listener
	snap    func() *state.Snapshot
	tunnels TunnelDialer
	dialer  *net.Dialer
	log     *slog.Logger
}

// NewOutbound serves captured outbound connections accepted on ln. dialer
// must mark its sockets so that they bypass capture.
func NewOutbound(ln net.Listener, snap func() *state.Snapshot, tunnels TunnelDialer, dialer *net.Dialer, log *slog.Logger) *Outbound {
	o := &Outbound{snap: snap, tunnels: tunnels, dialer: dialer, log: log.With("listener", "outbound")}
	o.l = newListener("outbound", ln, o.log, o.handle)
	return o
}

// Run serves until ctx is done, then drains.
func (o *Outbound) Run(ctx context.Context, drain func() (context.Context, context.CancelFunc)) error {
	return o.l.run(ctx, drain)
}

func (o *Outbound) handle(ctx context.Context, c net.Conn) {
	src := addrPort(c.RemoteAddr())
	tc, ok := c.(*net.TCPConn)
	if !ok || !addrPort(c.LocalAddr()).Addr().IsLoopback() {
		// Only captured local traffic arrives on loopback; a peer reaching
		// 15001 over the network is not ours to proxy.
		return
	}
	dst, err := capture.OriginalDst(tc)
	if err != nil {
		o.log.Warn("no original destination; closing", "src", src, "err", err)
		return
	}
	route := DecideOutbound(o.snap(), src, dst)
	log := o.log.With("src", src, "dst", dst, "route", route.Kind.String())
	up, err := o.connect(ctx, route, src)
	if err != nil {
		log.Warn("outbound connection failed", "err", err)
		return
	}
	start := time.Now()
	b, err := relay(c, up)
	log.Debug("outbound connection closed", "sent", b.Sent, "received", b.Received,
		"duration", time.Since(start).Round(time.Millisecond), "err", err)
}

func (o *Outbound) connect(ctx context.Context, r Route, src netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	switch r.Kind {
	case RouteHBONE:
		return o.tunnels.DialTunnel(ctx, Tunnel{Source: r.Source, Expected: r.Expected, Gateway: r.Gateway, Target: r.Target, Client: src})
	case RoutePlain, RoutePassthrough:
		return o.dialer.DialContext(ctx, "tcp", r.Target.String())
	}
	return nil, &RouteError{Route: r}
}

// RouteError is a connection the route refused to carry.
type RouteError struct{ Route Route }

func (e *RouteError) Error() string { return "dropped: " + e.Route.Reason }

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
