package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"

	"golang.org/x/sync/errgroup"

	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/connlimit"
	"github.com/ambient-agent/ambient-agent/agent/internal/handoff"
	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/ports"
)

// ListenConfig is what the data path's listeners are bound from.
type ListenConfig struct {
	// Mark is the capture mark: the redirected ports accept only on sockets
	// that carry it (capture's guard resets the others).
	Mark uint32
	// Limits bounds the HBONE server's handshakes, connections and streams.
	Limits config.Limits
	// Workloads are the local workloads recognised by their processes, each
	// with its own outbound port (15101, ...).
	Workloads []WorkloadPort
	// IDs are the local identities; nil: the host runs no workload, so no
	// HBONE server (it has no certificate to present).
	IDs identity.Source
	Log *slog.Logger
	// Refused is told of each connection or tunnel the HBONE server's limits
	// closed: stage "handshake", "connection" or "stream" (nil: not told).
	Refused func(listener string, remote netip.AddrPort, stage, limit string)
	// Sockets holds the listening sockets for a handoff, and those inherited
	// from the agent this one replaces (nil: bind each).
	Sockets *handoff.Sockets
}

// WorkloadPort is the outbound port of a workload recognised by its processes.
type WorkloadPort struct {
	UID  string
	Port uint16
}

// Listeners are the data path's listeners, bound: outbound (15001), the
// recognised workloads' outbound ports (15101, ...), inbound plaintext
// (15006) and HBONE (15008), with the HBONE client pool they share.
type Listeners struct {
	outbound []*Outbound // 15001 first, then the workloads'
	inbound  *InboundPlain
	hbone    *hbone.Server // nil without local identities
	hboneLn  net.Listener
	// inboundHBONE is hbone's handler (the waypoint's HTTP server stops with it).
	inboundHBONE *InboundHBONE
	pool         *hbone.Pool
	log          *slog.Logger
	closers      []io.Closer
}

// Listen binds every listener of the data path, or none. d.Tunnels is set to
// the HBONE client pool.
func Listen(cfg ListenConfig, d *Deps) (_ *Listeners, err error) {
	l := &Listeners{log: cfg.Log, pool: hbone.NewPool(hbone.PoolConfig{TLS: ClientTLS(cfg.IDs), Dialer: d.Dialer,
		Logger: cfg.Log.With("component", "hbone-client")})}
	l.closers = append(l.closers, l.pool)
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	d.Tunnels = &HBONEClient{Pool: l.pool, IDs: cfg.IDs}
	if cfg.IDs != nil {
		if err := l.listenHBONE(cfg, d); err != nil {
			return nil, err
		}
	}
	// REDIRECT sends captured IPv4 to 127.0.0.1 and IPv6 to ::1: listen on both
	// through the wildcard; the proxy refuses anything not arriving on loopback.
	ln, err := l.listen(cfg, ports.Outbound, "the outbound port", false)
	if err != nil {
		return nil, err
	}
	l.outbound = append(l.outbound, NewOutbound(ln, d))
	for _, w := range cfg.Workloads {
		ln, err := l.listen(cfg, int(w.Port), "the outbound port of workload "+w.UID, false)
		if err != nil {
			return nil, err
		}
		l.outbound = append(l.outbound, NewWorkloadOutbound(ln, d, w.UID))
	}
	if ln, err = l.listen(cfg, ports.InboundPlaintext, "the inbound plaintext port", true); err != nil {
		return nil, err
	}
	l.inbound = NewInboundPlain(ln, d)
	return l, nil
}

// listen binds a marked listener of a redirected port, or takes the one the
// agent this one replaces handed over; Close closes it. keepAlive is false for
// the outbound ports, which only local applications reach (capture.ListenMarked).
func (l *Listeners) listen(cfg ListenConfig, port int, what string, keepAlive bool) (net.Listener, error) {
	addr := ":" + strconv.Itoa(port)
	fresh := false
	ln, err := cfg.Sockets.Listen("tcp marked "+addr, func() (net.Listener, error) {
		fresh = true
		return capture.ListenMarked("tcp", addr, cfg.Mark, keepAlive)
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: listen on %s (%d): %w", what, port, err)
	}
	if !fresh && !keepAlive {
		// A listener taken over from the agent this one replaces comes back through net.FileListener, whose
		// accepted connections get Go's default keepalive: switch it off on each, as a fresh listener does.
		ln = noKeepAlive{ln}
	}
	l.closers = append(l.closers, ln)
	return ln, nil
}

// listenHBONE binds the HBONE server, with the handler of inbound tunnels.
func (l *Listeners) listenHBONE(cfg ListenConfig, d *Deps) error {
	inbound := NewInboundHBONE(d, cfg.IDs)
	scfg := hbone.ServerConfig{
		Certificate: inbound.Certificate,
		Handler:     inbound,
		Logger:      cfg.Log.With("component", "hbone-server"),
		Handshakes:  connlimit.New(cfg.Limits.Handshakes, cfg.Limits.HandshakesPerSource),
		Conns:       connlimit.New(cfg.Limits.Connections, cfg.Limits.ConnectionsPerSource),
		Streams:     connlimit.New(cfg.Limits.Streams, cfg.Limits.StreamsPerSource),
	}
	if cfg.Refused != nil {
		scfg.Refused = func(remote netip.AddrPort, stage, limit string) { cfg.Refused("hbone", remote, stage, limit) }
	}
	srv, err := hbone.NewServer(scfg)
	if err != nil {
		return fmt.Errorf("hbone: %w", err)
	}
	addr := ":" + strconv.Itoa(ports.HBONE)
	ln, err := cfg.Sockets.Listen("tcp "+addr, func() (net.Listener, error) { return net.Listen("tcp", addr) })
	if err != nil {
		return fmt.Errorf("hbone: listen on the HBONE port: %w", err)
	}
	l.hbone, l.hboneLn, l.inboundHBONE = srv, ln, inbound
	l.closers = append(l.closers, ln)
	return nil
}

// Run serves every listener until ctx is done, or one fails, then drains each
// within the deadline drain gives, and closes the client pool.
func (l *Listeners) Run(ctx context.Context, drain func() (context.Context, context.CancelFunc)) error {
	defer l.pool.Close()
	g, ctx := errgroup.WithContext(ctx)
	for _, o := range l.outbound {
		g.Go(func() error { return o.Run(ctx, drain) })
	}
	g.Go(func() error { return l.inbound.Run(ctx, drain) })
	if l.hbone != nil {
		g.Go(func() error { return l.runHBONE(ctx, drain) })
	}
	return g.Wait()
}

// runHBONE serves HBONE until ctx is done, then shuts down gracefully (GOAWAY)
// within the drain deadline.
func (l *Listeners) runHBONE(ctx context.Context, drain func() (context.Context, context.CancelFunc)) error {
	errc := make(chan error, 1)
	go func() { errc <- l.hbone.Serve(l.hboneLn) }()
	select {
	case err := <-errc:
		return fmt.Errorf("hbone: serve: %w", err)
	case <-ctx.Done():
	}
	dctx, cancel := drain()
	defer cancel()
	go l.inboundHBONE.shutdownL7(dctx) // the waypoint's HTTP connections: they hold tunnels the drain waits for
	if err := l.hbone.Shutdown(dctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		l.log.Warn("hbone: shutdown", "err", err)
	}
	l.hbone.Close()
	if err := <-errc; err != nil && !errors.Is(err, hbone.ErrServerClosed) {
		return fmt.Errorf("hbone: serve: %w", err)
	}
	return nil
}

// Close releases the listeners and the pool of a Listeners that never ran.
func (l *Listeners) Close() {
	for _, c := range l.closers {
		_ = c.Close()
	}
}

// noKeepAlive accepts connections without TCP keepalive.
type noKeepAlive struct{ net.Listener }

func (l noKeepAlive) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetKeepAlive(false)
	}
	return c, err
}
