package proxy

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// InboundPlain is the inbound plaintext proxy on 15006: captured connections to
// local workloads that did not arrive over HBONE (clients outside the mesh).
type InboundPlain struct {
	l      *listener
	snap   func() *state.Snapshot
	dialer *net.Dialer
	log    *slog.Logger
}

// NewInboundPlain serves captured inbound connections accepted on ln. dialer
// must mark its sockets so that they bypass capture.
func NewInboundPlain(ln net.Listener, snap func() *state.Snapshot, dialer *net.Dialer, log *slog.Logger) *InboundPlain {
	p := &InboundPlain{snap: snap, dialer: dialer, log: log.With("listener", "inbound_plaintext")}
	p.l = newListener("inbound_plaintext", ln, p.log, p.handle)
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
		p.log.Warn("no original destination; closing", "src", src, "err", err)
		return
	}
	log := p.log.With("src", src, "dst", dst)
	w, ok := p.snap().LocalByAddr(dst.Addr())
	switch {
	case !ok:
		log.Warn("inbound plaintext to an address of no local workload; closing")
		return
	case IllegalPort(dst.Port()):
		log.Warn("inbound plaintext to an agent port; closing")
		return
	}
	dctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	up, err := p.dialer.DialContext(dctx, "tcp", dst.String())
	cancel()
	if err != nil {
		log.Warn("inbound plaintext: connect to the workload failed", "workload", w.Name, "err", err)
		return
	}
	start := time.Now()
	b, err := relay(c, up)
	log.Info("inbound plaintext connection closed", "workload", w.Name, "sent", b.Sent, "received", b.Received,
		"duration", time.Since(start).Round(time.Millisecond), "err", err)
}
