package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestShutdownGraceful: Shutdown stops new tunnels (GOAWAY; the listener is closed) while established ones keep
// working, and returns once they are done.
func TestShutdownGraceful(t *testing.T) {
	t.Run("Relay", func(t *testing.T) { testShutdownGraceful(t, harnessOpts{}) })
	// A tunnel handed to RelayAsync outlives its handler: the drain still waits for it.
	t.Run("RelayAsync", func(t *testing.T) { testShutdownGraceful(t, harnessOpts{authorize: allowAsync}) })
}

func allowAsync(_ context.Context, req *Request) decision {
	return decision{target: req.Target.Addr, async: true}
}

func testShutdownGraceful(t *testing.T, opts harnessOpts) {
	h := newHarness(t, opts)
	echo := echoServer(t)
	st := h.dial(t, echo)
	done := make(chan error, 1)
	go func() { done <- h.srv.Shutdown(context.Background()) }()

	// Wait until the client saw the GOAWAY: new tunnels then need a new connection, which the closed listener
	// refuses.
	deadline := time.Now().Add(5 * time.Second)
	for {
		extra, err := h.pool.Dial(context.Background(), h.dst.with(request{Authority: echo.String()}))
		if err != nil {
			if FlagOf(err) != FlagDial {
				t.Fatalf("new tunnel during shutdown: %v, want DIAL", err)
			}
			break
		}
		_ = extra.Close() // dialed before the GOAWAY went out
		if time.Now().After(deadline) {
			t.Fatal("server kept accepting tunnels after Shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The established tunnel still carries bytes both ways.
	if _, err := st.Write([]byte("draining")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "draining" {
		t.Fatalf("established tunnel during drain: %q %v", buf, err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a tunnel open", err)
	case <-time.After(100 * time.Millisecond):
	}
	_ = st.CloseWrite()
	_ = readAll(t, st)
	_ = st.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last tunnel closed")
	}
}

// TestShutdownDeadline: when the drain deadline passes, Shutdown closes what is left and says so.
func TestShutdownDeadline(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.dial(t, echoServer(t))
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := h.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want DeadlineExceeded", err)
	}
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := st.Read(make([]byte, 1)); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("read on a tunnel cut by Close: %v, want a failure", err)
	}
}

// TestRevoke: the Revoker given to Relay tears an established tunnel down with FlagRevoked.
func TestRevoke(t *testing.T) {
	revoke := &Revoker{}
	h := newHarness(t, harnessOpts{authorize: func(_ context.Context, req *Request) decision {
		d := allow(req.Target.Addr)
		d.revoker = revoke
		return d
	}})
	st := h.dial(t, echoServer(t))
	defer st.Close()
	if _, err := st.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(st, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	revoke.Revoke()
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(st); err != nil && FlagOf(err) != FlagReset {
		t.Fatalf("read after revoke: %v", err)
	}
	h.srvTel.waitFor(t, "server TunnelClosed", func(r *recorder) bool { return len(r.closed) == 1 })
	if got := h.srvTel.closed[0].Flag; got != FlagRevoked {
		t.Errorf("flag %v, want REVOKED", got)
	}
}

// TestPoolCloseFailsTunnels: closing the pool ends its tunnels with a failure, not EOF.
func TestPoolCloseFailsTunnels(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.dial(t, echoServer(t))
	defer st.Close()
	_ = h.pool.Close()
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := st.Read(make([]byte, 1)); FlagOf(err) != FlagShutdown {
		t.Fatalf("read after pool Close: %v, want SHUTDOWN", err)
	}
	if _, err := st.Write([]byte("x")); err == nil {
		t.Fatal("write after pool Close succeeded")
	}
}

// TestForwardedReachesHandler: the handler sees the client identity, the identity the server presented, the
// addresses and the forwarded client.
func TestForwardedReachesHandler(t *testing.T) {
	got := make(chan *Request, 1)
	h := newHarness(t, harnessOpts{authorize: func(_ context.Context, req *Request) decision {
		got <- req
		return deny(FlagDenied, nil)
	}})
	_, err := h.pool.Dial(context.Background(), h.dst.with(request{
		Authority:    "127.0.0.1:8080",
		ForwardedFor: netip.MustParseAddrPort("10.9.8.7:5555"),
		Baggage:      Baggage{Namespace: "default"},
	}))
	if FlagOf(err) != FlagConnect {
		t.Fatalf("dial: %v", err)
	}
	req := <-got
	if req.PeerIdentity.String() != clientID || req.LocalIdentity.String() != serverID || req.ForwardedFor != netip.MustParseAddrPort("10.9.8.7:5555") ||
		req.Target.Addr != netip.MustParseAddrPort("127.0.0.1:8080") || req.LocalAddr != h.srvAddr ||
		req.Header("baggage") != "k8s.namespace.name=default" {
		t.Errorf("request %+v", req)
	}
}

// TestResetWithIdleUpstream: when the client resets the stream, or its connection dies, while the upstream
// application is idle (it neither sends nor closes), the server still ends the tunnel and closes the upstream.
// A RST_STREAM CANCEL is a normal end; a lost connection is a RESET.
func TestResetWithIdleUpstream(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	closedByServer := make(chan struct{}, 2)
	probe := make(chan struct{}, 2)
	idle := tcpServer(t, func(c *net.TCPConn) {
		_, _ = io.ReadAll(c) // until our side is half-closed or closed
		select {             // then silence: nothing sent, nothing closed
		case <-probe:
		case <-time.After(10 * time.Second):
			return
		}
		for range 100 { // now find out whether the server closed its end
			if _, err := c.Write([]byte("z")); err != nil {
				closedByServer <- struct{}{}
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	for i, tc := range []struct {
		name string
		end  func(rc *rawClient, id uint32)
		flag Flag
	}{
		{"client RST_STREAM CANCEL", func(rc *rawClient, id uint32) { _ = rc.fr.WriteRSTStream(id, http2.ErrCodeCancel) }, FlagNone},
		{"client connection lost", func(rc *rawClient, _ uint32) { _ = rc.nc.Close() }, FlagReset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, h)
			id := rc.connect(idle.String())
			if st, _, err := rc.awaitStatus(id); err != nil || st != 200 {
				t.Fatalf("status %d %v", st, err)
			}
			tc.end(rc, id)
			h.srvTel.waitFor(t, "tunnel end", func(r *recorder) bool { return len(r.closed) == i+1 })
			h.srvTel.mu.Lock()
			got := h.srvTel.closed[i]
			h.srvTel.mu.Unlock()
			if got.Flag != tc.flag {
				t.Errorf("flag %v (%v), want %v", got.Flag, got.Err, tc.flag)
			}
			probe <- struct{}{}
			select {
			case <-closedByServer:
			case <-time.After(5 * time.Second):
				t.Fatal("upstream connection left open")
			}
		})
	}
}

// misuseHandler breaks the handler's contract on purpose: it relays without accepting, or panics after accepting.
type misuseHandler struct {
	mode *atomic.Value
	up   netip.AddrPort
}

func (m misuseHandler) ServeHBONE(r *Request) {
	up, err := net.Dial("tcp", m.up.String())
	if err != nil {
		r.RefuseDial(m.up, err)
		return
	}
	defer up.Close()
	switch m.mode.Load() {
	case "relay-unaccepted":
		r.Relay(up, nil)
	case "panic-after-accept":
		_ = r.Accept(Baggage{})
		panic("handler bug after the 200")
	}
}

func (misuseHandler) Refused(*TunnelInfo, Flag, error) {}

// A handler that relays without accepting relays nothing: the request is refused (503, INTERNAL). One that
// panics after accepting resets the tunnel: its client never reads a clean end.
func TestHandlerMisuseFailsClosed(t *testing.T) {
	echo := echoServer(t)
	var mode atomic.Value
	h := newHarness(t, harnessOpts{server: func(c *ServerConfig) { c.Handler = misuseHandler{mode: &mode, up: echo} }})
	mode.Store("relay-unaccepted")
	if _, err := h.pool.Dial(context.Background(), h.dst.with(request{Authority: echo.String()})); !strings.Contains(fmt.Sprint(err), "status 503") {
		t.Errorf("relay without accept: %v, want a 503", err)
	}
	mode.Store("panic-after-accept")
	st, err := h.pool.Dial(context.Background(), h.dst.with(request{Authority: echo.String()}))
	if err != nil {
		t.Fatalf("the 200 came before the panic: %v", err)
	}
	defer st.Close()
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(st); FlagOf(err) != FlagReset {
		t.Errorf("read after the handler panicked: %v, want a reset, not a clean end", err)
	}
}

// RelayAsync: the handler returns while the tunnel relays on a goroutine of its own; done reports the tunnel once
// it ended; a done that panics neither takes the process down nor keeps the tunnel from being released.
func TestRelayAsync(t *testing.T) {
	echo, panicky := echoServer(t), echoServer(t)
	h := newHarness(t, harnessOpts{authorize: func(_ context.Context, req *Request) decision {
		return decision{target: req.Target.Addr, async: true, panicInDone: req.Target.Addr == panicky}
	}})
	st := h.dial(t, echo)
	h.srvTel.waitFor(t, "tunnel open", func(r *recorder) bool { return len(r.opened) == 1 })
	for deadline := time.Now().Add(5 * time.Second); goroutinesIn("(*testHandler).ServeHBONE") != 0; {
		if time.Now().After(deadline) {
			t.Fatal("the handler did not return after RelayAsync")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := goroutinesIn("(*Request).relayDetached"); n != 1 {
		t.Errorf("%d relay goroutines for one tunnel, want 1", n)
	}
	if _, err := st.Write([]byte("after the handler returned")); err != nil {
		t.Fatal(err)
	}
	_ = st.CloseWrite()
	if got := string(readAll(t, st)); got != "after the handler returned" {
		t.Fatalf("echo %q", got)
	}
	_ = st.Close()
	h.srvTel.waitFor(t, "tunnel closed", func(r *recorder) bool { return len(r.closed) == 1 })
	h.srvTel.mu.Lock()
	s := h.srvTel.closed[0]
	h.srvTel.mu.Unlock()
	if s.Flag != FlagNone || s.BytesReceived != int64(len("after the handler returned")) {
		t.Errorf("done got %+v", s)
	}

	// done panics: the process survives, the tunnel is released (the drain does not wait for it), the server
	// goes on.
	bad := h.dial(t, panicky)
	_, _ = bad.Write([]byte("x"))
	_ = bad.CloseWrite()
	_ = readAll(t, bad)
	_ = bad.Close()
	again := h.dial(t, echo)
	_ = again.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after a panicking done: %v (was the tunnel released?)", err)
	}
}
