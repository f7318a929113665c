package proxy

import (
	"context"
	"net"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
)

// InboundPlain is the inbound plaintext proxy on 15006: captured connections to
// local workloads that did not arrive over HBONE (clients outside the mesh).
type InboundPlain struct {
	l *listener
	d *Deps
}

// NewInboundPlain serves captured inbound connections accepted on ln.
func NewInboundPlain(ln net.Listener, d *Deps) *InboundPlain {
	p := &InboundPlain{d: d}
	p.l = newListener("inbound_plaintext", ln, d.Log, p.handle)
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
	w, ok := snap.LocalByAddr(dst.Addr())
	srcW, _ := snap.WorkloadByAddr(src.Addr())
	rec := p.d.Metrics.Open(p.d.Access,
		telemetry.ConnInfo{Direction: "inbound_plaintext", Src: src, Dst: dst, Route: "plaintext"},
		connLabels(telemetry.ReporterDestination, srcW, "", w, "", false))
	// A plaintext source has no identity, whatever gossip says it is.
	rec.Labels().SourcePrincipal = ""
	switch {
	case !ok:
		rec.Close(0, 0, telemetry.FlagNoRoute, "no local workload has the destination address")
		return
	case IllegalPort(dst.Port()):
		rec.Close(0, 0, telemetry.FlagNoRoute, "destination is an agent port")
		return
	}
	conn := authzConn(w, dst, spiffeid.ID{}, src.Addr())
	if dec := p.d.authorize(conn); !dec.Allow {
		reset(tc)
		rec.Close(0, 0, telemetry.FlagDeny, dec.String())
		return
	}
	dctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	up, err := p.d.Dialer.DialContext(dctx, "tcp", dst.String())
	cancel()
	if err != nil {
		rec.Close(0, 0, telemetry.FlagConnect, err.Error())
		return
	}
	revoked := make(chan struct{})
	untrack := p.d.Live.add(conn, func() { close(revoked); reset(tc); up.Close() })
	b, err := relay(c, up, nil) // TCP to TCP: splice, no buffers
	untrack()
	flag, reason := telemetry.FlagNone, errString(err)
	select {
	case <-revoked:
		flag, reason = telemetry.FlagDeny, "closed: a policy change denies it now"
	default:
	}
	rec.Close(b.Sent, b.Received, flag, reason)
}

// reset closes c with a TCP RST: a denied client learns at once and nothing
// it sent is forwarded.
func reset(c *net.TCPConn) { abort(c) }
