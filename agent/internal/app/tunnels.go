package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/connlimit"
	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/proxy"
	"github.com/ambient-agent/ambient-agent/ports"
)

// hboneServer is the inbound HBONE server on 15008; nil when the host runs no
// workload (it has no certificate to present).
type hboneServer struct {
	srv *hbone.Server
	ln  net.Listener
}

// bindHBONE builds the HBONE client pool and, with local workloads, binds the
// HBONE server.
func (a *App) bindHBONE(cfg *config.Config, deps *proxy.Deps) error {
	a.pool = hbone.NewPool(hbone.PoolConfig{Dialer: deps.Dialer, Logger: a.log.With("component", "hbone-client")})
	deps.Tunnels = &proxy.HBONEClient{Pool: a.pool, IDs: a.ids}
	if a.ids == nil {
		return nil
	}
	inbound := proxy.NewInboundHBONE(deps, a.ids)
	srv, err := hbone.NewServer(hbone.ServerConfig{
		Certificate: inbound.Certificate,
		Handler:     inbound,
		Logger:      a.log.With("component", "hbone-server"),

		Handshakes: connlimit.New(cfg.Limits.Handshakes, cfg.Limits.HandshakesPerSource),
		Conns:      connlimit.New(cfg.Limits.Connections, cfg.Limits.ConnectionsPerSource),
		Streams:    connlimit.New(cfg.Limits.Streams, cfg.Limits.StreamsPerSource),
		Refused: func(remote netip.AddrPort, stage, limit string) {
			a.refused("hbone", remote, stage, limit)
		},
	})
	if err != nil {
		return fmt.Errorf("hbone: %w", err)
	}
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(ports.HBONE))
	if err != nil {
		return fmt.Errorf("hbone: listen on the HBONE port: %w", err)
	}
	a.hbone = &hboneServer{srv: srv, ln: ln}
	return nil
}

// runHBONE serves HBONE until ctx is done, then shuts down gracefully (GOAWAY)
// within the drain deadline, and closes the client pool.
func (a *App) runHBONE(ctx context.Context, drain func() (context.Context, context.CancelFunc)) error {
	defer a.pool.Close()
	if a.hbone == nil {
		<-ctx.Done()
		return nil
	}
	errc := make(chan error, 1)
	go func() { errc <- a.hbone.srv.Serve(a.hbone.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("hbone: serve: %w", err)
	case <-ctx.Done():
	}
	dctx, cancel := drain()
	defer cancel()
	if err := a.hbone.srv.Shutdown(dctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		a.log.Warn("hbone: shutdown", "err", err)
	}
	a.hbone.srv.Close()
	if err := <-errc; err != nil && !errors.Is(err, hbone.ErrServerClosed) {
		return fmt.Errorf("hbone: serve: %w", err)
	}
	return nil
}

// refused counts a connection (or tunnel) a limit closed, and says so in the
// log at most once a second per listener and limit: a flood must not flood the
// journal too.
func (a *App) refused(listener string, remote netip.AddrPort, stage, limit string) {
	a.metrics.Refused.WithLabelValues(listener, stage, limit).Inc()
	key := "refused/" + listener + "/" + stage + "/" + limit
	if ok, suppressed := a.warn.Allow(key); ok {
		a.log.Warn("connection refused: over a limit ([limits])", "listener", listener, "stage", stage,
			"limit", limit, "remote", remote, "suppressed", suppressed)
	}
}
