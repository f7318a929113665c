package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

	"github.com/ambient-agent/ambient-agent/agent/internal/bufcopy"
	"github.com/ambient-agent/ambient-agent/agent/internal/connlimit"
)

// ServerConfig configures a Server. Certificate and Handler are required; zero values elsewhere mean ztunnel's
// defaults.
type ServerConfig struct {
	// Certificate chooses what the server presents in each handshake: from the address the connection arrived
	// on and the client's SNI ("" when none), the local identity and that handshake's TLS configuration
	// (identity.ServerConfig: TLS 1.3, client certificates required and verified). An error ends the
	// handshake. The identity reaches the handler as Request.LocalIdentity.
	Certificate func(local netip.Addr, serverName string) (spiffeid.ID, *tls.Config, error)
	// Handler serves every request that passed the protocol checks, and is told of the refused ones.
	Handler Handler
	Logger  *slog.Logger

	HandshakeTimeout time.Duration // TLS handshake (10 s)
	HeaderTimeout    time.Duration // HTTP/2 preface and first SETTINGS after the handshake (10 s)
	IdleTimeout      time.Duration // a connection without streams is closed after this (10 min); <0 disables
	// KeepAliveInterval and KeepAliveTimeout: a PING every 10 s, the connection dropped after 20 s unanswered.
	KeepAliveInterval time.Duration
	KeepAliveTimeout  time.Duration
	// MaxConcurrentStreams per connection (200); more are refused with REFUSED_STREAM.
	MaxConcurrentStreams int

	// Handshakes bounds the connections in their TLS handshake or HTTP/2 preface, per source address and in
	// total; Conns the established ones. A connection over a limit is closed as soon as it is accepted (or
	// established), so that one client that opens connections and never finishes them cannot exhaust the
	// agent's file descriptors. nil: no limit.
	Handshakes, Conns *connlimit.Limiter
	// Streams bounds the open tunnels (CONNECT streams, each an upstream connection) per peer address and in
	// total; a stream over it is answered 503 (OVERLOADED). nil: no limit.
	Streams *connlimit.Limiter
	// Refused is told of each connection a limit closed: stage "handshake", "connection" or "stream", and the limit
	// (connlimit.PerSource or connlimit.Total). nil: not told.
	Refused func(remote netip.AddrPort, stage, limit string)
}

// Server is the HBONE server (port 15008). Serve it on one or more listeners; stop it with Shutdown or Close.
type Server struct {
	cfg  ServerConfig
	log  *slog.Logger
	lim  connLimits
	bufs *bufPool

	ctx    context.Context // cancelled by Close: aborts handshakes and stream contexts
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	accepted  map[net.Conn]*conn // every live accepted connection; its HTTP/2 conn once past the preface
	draining  bool
	wg        sync.WaitGroup // one per accepted connection
}

// NewServer checks cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Certificate == nil {
		return nil, errors.New("hbone: server: no Certificate choice")
	}
	if cfg.Handler == nil {
		return nil, errors.New("hbone: server: no Handler")
	}
	setDefault(&cfg.HandshakeTimeout, defaultHandshakeTimeout)
	setDefault(&cfg.HeaderTimeout, defaultHeaderTimeout)
	setDefault(&cfg.IdleTimeout, defaultServerIdle)
	setDefault(&cfg.KeepAliveInterval, defaultKeepAliveInterval)
	setDefault(&cfg.KeepAliveTimeout, defaultKeepAliveTimeout)
	if cfg.MaxConcurrentStreams <= 0 {
		cfg.MaxConcurrentStreams = serverMaxStreams
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		bufs:      newBufPool(),
		listeners: make(map[net.Listener]struct{}),
		accepted:  make(map[net.Conn]*conn),
		lim: connLimits{
			keepAliveInterval: cfg.KeepAliveInterval,
			keepAliveTimeout:  cfg.KeepAliveTimeout,
			idleTimeout:       max(cfg.IdleTimeout, 0),
			maxHeaderList:     serverMaxHeaderList,
			maxStreams:        cfg.MaxConcurrentStreams,
		},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// withH2 returns cfg with ALPN "h2", cloning it only if needed.
func withH2(cfg *tls.Config) *tls.Config {
	if slices.Contains(cfg.NextProtos, "h2") {
		return cfg
	}
	c := cfg.Clone()
	c.NextProtos = []string{"h2"}
	return c
}

// Serve accepts HBONE connections on ln until Shutdown or Close, which make it return ErrServerClosed. It owns
// the goroutines of the connections it accepts; Shutdown and Close wait for them.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if err := s.acceptFailed(ln, err, &backoff); err != nil {
				return err
			}
			continue
		}
		backoff = 0
		release, ok := s.acquire(s.cfg.Handshakes, nc, "handshake")
		if !ok {
			continue
		}
		if !s.track(nc) {
			release()
			_ = nc.Close()
			return ErrServerClosed
		}
		go s.serveConn(nc, release)
	}
}

// acceptFailed says whether Serve ends after a failed Accept: when the server
// drains or the listener was closed. A temporary failure (out of file
// descriptors) is retried after a backoff that doubles up to a second.
func (s *Server) acceptFailed(ln net.Listener, err error, backoff *time.Duration) error {
	if s.isDraining() {
		return ErrServerClosed
	}
	if errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("hbone: accept on %s: %w", ln.Addr(), err)
	}
	*backoff = min(max(2**backoff, 5*time.Millisecond), time.Second)
	s.log.Warn("hbone: accept failed; retrying", "addr", ln.Addr(), "err", err, "backoff", *backoff)
	select {
	case <-time.After(*backoff):
		return nil
	case <-s.ctx.Done():
		return ErrServerClosed
	}
}

// track counts an accepted connection in, unless the server drains.
func (s *Server) track(nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.wg.Add(1)
	s.accepted[nc] = nil
	return true
}

// acquire takes a slot of lim for nc's source, or closes nc and reports the refusal.
func (s *Server) acquire(lim *connlimit.Limiter, nc net.Conn, stage string) (release func(), ok bool) {
	if lim == nil {
		return func() {}, true
	}
	remote := addrPortOf(nc.RemoteAddr())
	release, refused := lim.Acquire(remote.Addr())
	if release != nil {
		return release, true
	}
	_ = nc.Close()
	if s.cfg.Refused != nil {
		s.cfg.Refused(remote, stage, refused)
	}
	return nil, false
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// Shutdown stops accepting, sends every connection a graceful GOAWAY, and waits for their streams to end. When
// ctx ends first it closes everything (Close) and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	for _, c := range s.stopAccepting(false) {
		c.goAway() // connections still in their handshake see draining when they get here
	}
	done := make(chan struct{})
	go func() { // ends when the connections have; Close below guarantees that
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		_ = s.Close()
		<-done
		return ctx.Err()
	}
}

// Close closes the listeners and every connection at once, and waits for their goroutines.
func (s *Server) Close() error {
	conns := s.stopAccepting(true)
	s.cancel()
	for _, c := range conns {
		c.closeWithError(newError(FlagShutdown, "serve", c.remote.String(), ErrServerClosed))
	}
	s.wg.Wait()
	return nil
}

// stopAccepting marks the server draining, closes its listeners and returns
// its established connections; with closeHandshakes, it closes those still in
// their handshake or preface (left alone, they see draining when they get
// there).
func (s *Server) stopAccepting(closeHandshakes bool) []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
	for ln := range s.listeners {
		_ = ln.Close()
	}
	var conns []*conn
	for nc, c := range s.accepted {
		switch {
		case c != nil:
			conns = append(conns, c)
		case closeHandshakes:
			_ = nc.Close()
		}
	}
	return conns
}

// serveConn runs one accepted connection: TLS handshake, HTTP/2 preface, then frames until it closes.
// handshake releases the connection's handshake slot.
func (s *Server) serveConn(nc net.Conn, handshake func()) {
	defer s.wg.Done()
	defer handshake() // released earlier once established; releasing twice is a no-op
	defer func() {
		s.mu.Lock()
		delete(s.accepted, nc)
		s.mu.Unlock()
	}()
	setTCPOptions(nc)
	info := &TunnelInfo{Direction: Inbound, Local: addrPortOf(nc.LocalAddr()), Remote: addrPortOf(nc.RemoteAddr()), Start: time.Now()}
	tc, localID, err := s.handshake(nc, info)
	if err != nil {
		_ = nc.Close()
		s.log.Debug("hbone: inbound connection failed", "err", err)
		s.cfg.Handler.Refused(info, FlagOf(err), err)
		return
	}
	s.serveH2(nc, tc, info, localID, handshake)
}

// handshake runs the TLS handshake of an accepted connection, presenting the
// certificate the Certificate choice names for its local address and SNI, and
// fills in the peer's identity. Its errors carry their flag: TLS, or TIMEOUT.
func (s *Server) handshake(nc net.Conn, info *TunnelInfo) (*tls.Conn, spiffeid.ID, error) {
	var localID spiffeid.ID
	// TLS records are read and written with raw system calls (bufcopy.Conn).
	tc := tls.Server(bufcopy.Wrap(nc), &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		id, cfg, err := s.cfg.Certificate(info.Local.Addr().Unmap(), hello.ServerName)
		if err != nil {
			return nil, err
		}
		localID = id
		return withH2(cfg), nil
	}})
	hctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		return nil, localID, newError(timeoutFlag(err, FlagTLS), "handshake", info.Remote.String(), err)
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != "h2" && cs.NegotiatedProtocol != "" {
		return nil, localID, newError(FlagTLS, "handshake", info.Remote.String(), fmt.Errorf("ALPN %q, want h2", cs.NegotiatedProtocol))
	}
	peer, err := peerID(cs)
	if err != nil {
		return nil, localID, newError(FlagTLS, "handshake", info.Remote.String(), err)
	}
	info.Peer, info.ServerName = peer, cs.ServerName
	return tc, localID, nil
}

// serveH2 runs HTTP/2 on an established (TLS) connection nc whose peer identity is in info, where this server
// presented localID; raw is the accepted connection it came from.
func (s *Server) serveH2(raw, nc net.Conn, info *TunnelInfo, localID spiffeid.ID, handshake func()) {
	defer func() {
		s.mu.Lock()
		delete(s.accepted, raw)
		s.mu.Unlock()
	}()
	// The header timeout runs until the client's first SETTINGS frame has been read (readloop.go clears it).
	_ = nc.SetReadDeadline(time.Now().Add(s.cfg.HeaderTimeout))
	if err := readPreface(nc); err != nil {
		_ = nc.Close()
		err = newError(timeoutFlag(err, FlagProtocol), "preface", info.Remote.String(), err)
		s.log.Debug("hbone: inbound connection failed", "err", err)
		s.cfg.Handler.Refused(info, FlagOf(err), err)
		return
	}
	handshake()
	release, ok := s.acquire(s.cfg.Conns, raw, "connection")
	if !ok {
		return
	}
	defer release()
	c := newConn(nc, connOptions{server: true, lim: s.lim, log: s.log, bufs: s.bufs, peer: info.Peer, localID: localID, serverName: info.ServerName})
	c.onStream = func(st *Stream, f *http2.MetaHeadersFrame) { s.onStream(c, st, f) }
	if err := c.writePreamble(); err != nil {
		_ = nc.Close()
		return
	}
	s.mu.Lock()
	draining := s.draining
	s.accepted[raw] = c
	s.mu.Unlock()
	if draining {
		c.goAway()
	}
	c.serve()
}

func readPreface(r io.Reader) error {
	var buf [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return fmt.Errorf("reading client preface: %w", err)
	}
	if !bytes.Equal(buf[:], []byte(http2.ClientPreface)) {
		return fmt.Errorf("bad client preface %q", buf[:])
	}
	return nil
}

// setTCPOptions applies ztunnel's TCP settings: no Nagle, keepalive 180 s idle / 180 s interval / 9 probes.
func setTCPOptions(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{
			Enable: true, Idle: tcpKeepAlive, Interval: tcpKeepAlive, Count: tcpKeepAliveCount,
		})
	}
}

// timeoutFlag is FlagTimeout for deadline errors, else flag.
func timeoutFlag(err error, flag Flag) Flag {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return FlagTimeout
	}
	return flag
}
