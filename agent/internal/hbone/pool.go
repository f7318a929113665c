package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/bufcopy"
)

// PoolKey identifies the HTTP/2 connections a tunnel may share (spec/hbone.md "Connection pooling"): source
// identity, expected destination identities, destination address (ip:15008) and original client IP. Build it
// with NewPoolKey so that Expected is canonical.
type PoolKey struct {
	Source spiffeid.ID
	// Expected is the sorted, de-duplicated, comma-joined set of SPIFFE IDs the server may present.
	Expected string
	Addr     netip.AddrPort
	ClientIP netip.Addr
}

// NewPoolKey builds a PoolKey, canonicalizing the expected identities.
func NewPoolKey(src spiffeid.ID, expected []spiffeid.ID, addr netip.AddrPort, clientIP netip.Addr) PoolKey {
	ids := make([]string, 0, len(expected))
	for _, id := range expected {
		if !id.IsZero() {
			ids = append(ids, id.String())
		}
	}
	slices.Sort(ids)
	return PoolKey{
		Source:   src,
		Expected: strings.Join(slices.Compact(ids), ","),
		Addr:     netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()),
		ClientIP: clientIP.Unmap(),
	}
}

// expects reports whether the server identity id is one of the key's expected identities (any, if none).
func (k PoolKey) expects(id spiffeid.ID) bool {
	if k.Expected == "" {
		return true
	}
	want := id.String()
	for e := range strings.SplitSeq(k.Expected, ",") {
		if e == want {
			return true
		}
	}
	return false
}

// Tunnel is one outbound tunnel, the one value from the caller's routing decision to the wire: which identity is
// presented to which peer, and what the CONNECT asks. Tunnels with the same Key share pooled connections.
type Tunnel struct {
	// Source is the local identity presented; Expected the identities the peer may present.
	Source   spiffeid.ID
	Expected []spiffeid.ID
	// Gateway is the peer's HBONE address (ip:15008).
	Gateway netip.AddrPort
	// ServerName is the SNI to send ("" for none): it selects the destination on a node where workloads share
	// an address.
	ServerName string
	// Authority is the CONNECT :authority: "ip:port", "[ipv6]:port", or "host:port" for double HBONE.
	Authority string
	// ForwardedFor is the original client, for the forwarded header (omitted when invalid); ForwardedHost adds
	// ";host=" when the destination service is known.
	ForwardedFor  netip.AddrPort
	ForwardedHost string
	// Baggage describes the source workload (header omitted when empty).
	Baggage Baggage
	// ForwardedNetwork is the client's network, sent as x-forwarded-network: only on the inner CONNECT of double
	// HBONE (DialDouble sets it).
	ForwardedNetwork string
}

// Key is the pool key of the connections the tunnel may share: source and expected identities, the peer's
// address and the original client's (spec/hbone.md "Connection pooling").
func (t *Tunnel) Key() PoolKey {
	return NewPoolKey(t.Source, t.Expected, t.Gateway, t.ForwardedFor.Addr())
}

// PoolConfig configures a Pool. TLS is required; zero values elsewhere mean ztunnel's defaults.
type PoolConfig struct {
	// TLS returns the client configuration of a new connection for t (identity.ClientTLSConfig: t.Source's
	// certificate, t.ServerName, the server's SPIFFE ID verified against t.Expected). It is only called when
	// the pool opens a new connection; hbone also checks the server's identity against the tunnel's key.
	TLS func(t *Tunnel) (*tls.Config, error)
	// Dialer makes TCP connections to peers. Set its Control to mark sockets (SO_MARK) so that the agent's own
	// traffic bypasses capture. Default: TCP keepalive 180 s idle, 180 s interval, 9 probes.
	Dialer    *net.Dialer
	Logger    *slog.Logger
	Telemetry Telemetry

	MaxStreamsPerConn int           // a new connection once one carries min(this, peer's limit) streams (100)
	IdleTimeout       time.Duration // a connection without streams is closed after this (5 min); <0 disables
	ConnectTimeout    time.Duration // TCP connect plus TLS handshake (10 s)
	ResponseTimeout   time.Duration // waiting for the CONNECT answer (15 s)
	KeepAliveInterval time.Duration // PING every (10 s)
	KeepAliveTimeout  time.Duration // connection dropped when a PING is unanswered this long (20 s)
}

// Pool is the HBONE client: it keeps HTTP/2 connections per PoolKey and opens tunnels over them. Close it to
// release every connection; it owns their goroutines.
type Pool struct {
	cfg    PoolConfig
	dialer *net.Dialer
	log    *slog.Logger
	tel    Telemetry
	lim    connLimits
	bufs   *bufPool

	mu      sync.Mutex
	entries map[PoolKey]*poolEntry
	closed  bool
	wg      sync.WaitGroup // one per connection
}

type poolEntry struct {
	conns []*conn
	dial  *pendingDial // a connection being opened; others wait for it rather than opening their own
}

type pendingDial struct {
	done chan struct{}
	err  error
}

// NewPool returns an empty Pool.
func NewPool(cfg PoolConfig) *Pool {
	setDefault(&cfg.IdleTimeout, defaultClientIdle)
	setDefault(&cfg.ConnectTimeout, defaultConnectTimeout)
	setDefault(&cfg.ResponseTimeout, defaultResponseTimeout)
	setDefault(&cfg.KeepAliveInterval, defaultKeepAliveInterval)
	setDefault(&cfg.KeepAliveTimeout, defaultKeepAliveTimeout)
	if cfg.MaxStreamsPerConn <= 0 {
		cfg.MaxStreamsPerConn = clientStreamsPerConn
	}
	p := &Pool{
		cfg:     cfg,
		dialer:  cfg.Dialer,
		log:     cfg.Logger,
		tel:     cfg.Telemetry,
		bufs:    newBufPool(),
		entries: make(map[PoolKey]*poolEntry),
		lim: connLimits{
			keepAliveInterval: cfg.KeepAliveInterval,
			keepAliveTimeout:  cfg.KeepAliveTimeout,
			idleTimeout:       max(cfg.IdleTimeout, 0),
			maxHeaderList:     clientMaxHeaderList,
			maxStreams:        cfg.MaxStreamsPerConn,
		},
	}
	if p.dialer == nil {
		p.dialer = &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: tcpKeepAlive, Interval: tcpKeepAlive, Count: tcpKeepAliveCount,
		}}
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.tel == nil {
		p.tel = NopTelemetry{}
	}
	return p
}

// Close closes every connection (their tunnels fail with FlagShutdown) and waits for their goroutines. Dial
// fails with ErrPoolClosed afterwards.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	var conns []*conn
	for _, e := range p.entries {
		conns = append(conns, e.conns...)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.closeWithError(newError(FlagShutdown, "pool", c.remote.String(), ErrPoolClosed))
	}
	p.wg.Wait()
	return nil
}

// Conns returns how many HTTP/2 connections the pool holds for key.
func (p *Pool) Conns(key PoolKey) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.entries[key]; e != nil {
		return len(e.conns)
	}
	return 0
}

// acquire returns a connection for dst with a stream slot reserved, opening one if none has room.
func (p *Pool) acquire(ctx context.Context, t *Tunnel, key PoolKey) (*conn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, newError(FlagShutdown, "dial", key.Addr.String(), ErrPoolClosed)
		}
		e := p.entries[key]
		if e == nil {
			e = &poolEntry{}
			p.entries[key] = e
		}
		for _, c := range e.conns {
			if c.tryReserve(p.lim.maxStreams) {
				p.mu.Unlock()
				return c, nil
			}
		}
		if pd := e.dial; pd != nil {
			p.mu.Unlock()
			select {
			case <-pd.done:
				if pd.err != nil {
					return nil, pd.err
				}
				continue
			case <-ctx.Done():
				return nil, newError(timeoutFlag(ctx.Err(), FlagDial), "dial", key.Addr.String(), ctx.Err())
			}
		}
		pd := &pendingDial{done: make(chan struct{})}
		e.dial = pd
		p.mu.Unlock()

		c, err := p.dialConn(ctx, t, key)

		p.mu.Lock()
		e.dial = nil
		pd.err = err
		close(pd.done)
		if err == nil && p.closed {
			err = newError(FlagShutdown, "dial", key.Addr.String(), ErrPoolClosed)
			_ = c.nc.Close()
		}
		if err != nil {
			if len(e.conns) == 0 && p.entries[key] == e {
				delete(p.entries, key)
			}
			p.mu.Unlock()
			return nil, err
		}
		e.conns = append(e.conns, c)
		c.onClose = func(c *conn) { p.forget(key, c) }
		reserved := c.tryReserve(p.lim.maxStreams)
		p.wg.Add(1)
		p.mu.Unlock()
		go func() {
			defer p.wg.Done()
			c.serve()
		}()
		if reserved {
			return c, nil
		}
	}
}

// forget drops a closed connection from its entry.
func (p *Pool) forget(key PoolKey, c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entries[key]
	if e == nil {
		return
	}
	if i := slices.Index(e.conns, c); i >= 0 {
		e.conns = slices.Delete(e.conns, i, i+1)
	}
	if len(e.conns) == 0 && e.dial == nil {
		delete(p.entries, key)
	}
}

// dialConn opens a new HBONE connection: TCP, TLS with ALPN h2, the server's identity checked, HTTP/2 preface.
func (p *Pool) dialConn(ctx context.Context, t *Tunnel, key PoolKey) (*conn, error) {
	addr := key.Addr.String()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	cfg, err := p.tlsConfig(t, addr)
	if err != nil {
		return nil, err
	}
	nc, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, newError(timeoutFlag(err, FlagDial), "dial", addr, err)
	}
	setTCPOptions(nc)
	// TLS records read and written with raw system calls.
	return p.handshake(ctx, bufcopy.Wrap(nc), nc, cfg, key, addr)
}

// tlsConfig is the client configuration of a new connection for t.
func (p *Pool) tlsConfig(t *Tunnel, addr string) (*tls.Config, error) {
	if p.cfg.TLS == nil {
		return nil, newError(FlagTLS, "dial", addr, errors.New("the pool has no TLS configuration"))
	}
	cfg, err := p.cfg.TLS(t)
	if err != nil {
		return nil, newError(FlagTLS, "dial", addr, err)
	}
	return cfg, nil
}

// handshake runs TLS (ALPN h2, cfg) over nc, checks the server's identity against key, and sends the HTTP/2
// preface. It closes under on failure; addr names the peer in errors.
func (p *Pool) handshake(ctx context.Context, nc, under net.Conn, cfg *tls.Config, key PoolKey, addr string) (*conn, error) {
	tc := tls.Client(nc, withH2(cfg))
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = under.Close()
		return nil, newError(timeoutFlag(err, FlagTLS), "handshake", addr, err)
	}
	cs := tc.ConnectionState()
	peer, err := peerID(cs)
	switch {
	case cs.NegotiatedProtocol != "h2" && cs.NegotiatedProtocol != "":
		err = errors.New("server did not negotiate h2")
	case err == nil && !key.expects(peer):
		err = errors.New("server identity " + peer.String() + " is not one of " + key.Expected)
	}
	if err != nil {
		_ = under.Close()
		return nil, newError(FlagTLS, "handshake", addr, err)
	}
	c := newConn(tc, connOptions{server: false, lim: p.lim, log: p.log, bufs: p.bufs, peer: peer})
	if err := c.writePreamble(); err != nil {
		_ = under.Close()
		return nil, newError(FlagReset, "preface", addr, err)
	}
	return c, nil
}
