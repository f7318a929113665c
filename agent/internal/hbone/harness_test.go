package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// mustRun fails the test under CI=true, where a test that cannot run must never look like a pass, and skips it
// elsewhere.
func mustRun(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot run under CI: "+format, args...)
	}
	t.Skipf(format, args...)
}

func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		mustRun(t, "no loopback TCP: %v", err)
	}
	return ln
}

func lnAddr(ln net.Listener) netip.AddrPort { return ln.Addr().(*net.TCPAddr).AddrPort() }

// echoServer echoes every connection and half-closes its side once the client half-closed. It stops with the
// test.
func echoServer(t testing.TB) netip.AddrPort {
	t.Helper()
	return tcpServer(t, func(c *net.TCPConn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				_ = c.CloseWrite()
				return
			}
		}
	})
}

// tcpServer runs handle for every connection on a loopback listener, in goroutines joined at cleanup.
func tcpServer(t testing.TB, handle func(*net.TCPConn)) netip.AddrPort {
	t.Helper()
	ln := listenLoopback(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c.(*net.TCPConn))
				_ = c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return lnAddr(ln)
}

// recorder is a Telemetry that keeps everything.
type recorder struct {
	mu     sync.Mutex
	opened []*TunnelInfo
	closed []TunnelStats
	failed []Flag
	errs   []error
	notify chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1024)} }

// A nil recorder keeps nothing (the fuzz target's handler: a record per input would only grow).
func (r *recorder) TunnelOpened(t *TunnelInfo) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.opened = append(r.opened, t)
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) TunnelClosed(t *TunnelInfo, s TunnelStats) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.closed = append(r.closed, s)
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) TunnelFailed(t *TunnelInfo, f Flag, err error) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.failed = append(r.failed, f)
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) poke() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// failures is how many tunnels failed so far, and the flag and error of the i-th.
func (r *recorder) failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.failed)
}

func (r *recorder) failure(i int) (Flag, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed[i], r.errs[i]
}

// waitFor polls cond (under r.mu) until it holds or 5 s pass.
func (r *recorder) waitFor(t testing.TB, what string, cond func(r *recorder) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		ok := cond(r)
		r.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		select {
		case <-r.notify:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// harness is one HBONE server on loopback, and a client pool with a destination pointing at it.
type harness struct {
	ca      *testCA
	srv     *Server
	srvAddr netip.AddrPort
	srvTel  *recorder
	pool    *Pool
	cliTel  *recorder
	dst     target
}

// target is a tunnel without its request: identities and gateway. with adds what one request asks.
type target struct{ Tunnel }

// request is what one tunnel asks of the peer.
type request struct {
	Authority     string
	Baggage       Baggage
	ForwardedFor  netip.AddrPort
	ForwardedHost string
}

func (d target) with(r request) Tunnel {
	t := d.Tunnel
	t.Authority, t.Baggage, t.ForwardedFor, t.ForwardedHost = r.Authority, r.Baggage, r.ForwardedFor, r.ForwardedHost
	return t
}

type harnessOpts struct {
	authorize func(ctx context.Context, req *Request) decision
	handler   func(*testHandler)
	server    func(*ServerConfig)
	pool      func(*PoolConfig)
}

// allowAll connects every tunnel to its :authority, which makes tests short; the agent's handler never does.
func allowAll(_ context.Context, req *Request) decision { return allow(req.Target.Addr) }

// decision is what a test's authorize function decides for a request: refuse it, or connect to target.
type decision struct {
	refuse  Flag
	err     error
	target  netip.AddrPort
	dial    func(ctx context.Context, target netip.AddrPort) (net.Conn, error) // nil: the handler's dialer
	revoker *Revoker
	baggage Baggage
	// async: relay with RelayAsync (done panics with panicInDone).
	async, panicInDone bool
}

func allow(target netip.AddrPort) decision { return decision{target: target} }
func deny(flag Flag, err error) decision   { return decision{refuse: flag, err: err} }

// testHandler serves requests the way the agent's handler does (decide, dial, accept, relay) and records every
// tunnel in tel.
type testHandler struct {
	authorize      func(ctx context.Context, req *Request) decision
	tel            *recorder
	dialer         *net.Dialer
	connectTimeout time.Duration
}

func (h *testHandler) ServeHBONE(r *Request) {
	info := r.Info()
	d := h.authorize(r.Context(), r)
	if d.refuse != FlagNone {
		h.tel.TunnelFailed(info, d.refuse, r.Refuse(d.refuse, d.err))
		return
	}
	dial := d.dial
	if dial == nil {
		dial = func(ctx context.Context, t netip.AddrPort) (net.Conn, error) {
			return h.dialer.DialContext(ctx, "tcp", t.String())
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.connectTimeout)
	up, err := dial(ctx, d.target)
	cancel()
	if err != nil {
		e := r.RefuseDial(d.target, err)
		h.tel.TunnelFailed(info, e.Flag, e)
		return
	}
	if err := r.Accept(d.baggage); err != nil {
		up.Close()
		h.tel.TunnelFailed(info, FlagOf(err), err)
		return
	}
	info.Target, info.Bytes = d.target, r.Bytes
	h.tel.TunnelOpened(info)
	if d.async {
		r.RelayAsync(up, d.revoker, func(s TunnelStats) {
			up.Close()
			if d.panicInDone {
				panic("done panics")
			}
			h.tel.TunnelClosed(info, s)
		})
		return
	}
	defer up.Close()
	h.tel.TunnelClosed(info, r.Relay(up, d.revoker))
}

func (h *testHandler) Refused(info *TunnelInfo, flag Flag, err error) {
	h.tel.TunnelFailed(info, flag, err)
}

// staticCertificate presents one configuration as identity id on every handshake.
func staticCertificate(id string, cfg *tls.Config) func(netip.Addr, string) (spiffeid.ID, *tls.Config, error) {
	return func(netip.Addr, string) (spiffeid.ID, *tls.Config, error) {
		return spiffeid.RequireFromString(id), cfg, nil
	}
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	h := &harness{ca: newTestCA(t), srvTel: newRecorder(), cliTel: newRecorder()}
	if o.authorize == nil {
		o.authorize = allowAll
	}
	th := &testHandler{authorize: o.authorize, tel: h.srvTel, dialer: &net.Dialer{}, connectTimeout: 10 * time.Second}
	if o.handler != nil {
		o.handler(th)
	}
	scfg := ServerConfig{
		Certificate: staticCertificate(serverID, h.ca.serverTLS(h.ca.leaf(t, serverID))),
		Handler:     th,
	}
	if o.server != nil {
		o.server(&scfg)
	}
	srv, err := NewServer(scfg)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	ln := listenLoopback(t)
	h.srvAddr = lnAddr(ln)
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ln) }()

	clientCert := h.ca.leaf(t, clientID)
	pcfg := PoolConfig{Telemetry: h.cliTel, TLS: func(*Tunnel) (*tls.Config, error) { return h.ca.clientTLS(clientCert, serverID), nil }}
	if o.pool != nil {
		o.pool(&pcfg)
	}
	h.pool = NewPool(pcfg)
	h.dst = target{Tunnel{Source: spiffeid.RequireFromString(clientID), Expected: []spiffeid.ID{spiffeid.RequireFromString(serverID)}, Gateway: h.srvAddr}}
	t.Cleanup(func() {
		_ = h.pool.Close()
		_ = h.srv.Close()
		if err := <-serveDone; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return h
}

func (h *harness) dial(t testing.TB, target netip.AddrPort) *Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := h.pool.Dial(ctx, h.dst.with(request{Authority: target.String()}))
	if err != nil {
		t.Fatalf("dial %s: %v", target, err)
	}
	return st
}

// readAll reads until EOF with a deadline.
func readAll(t testing.TB, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}
