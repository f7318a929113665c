package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"regexp"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
)

// TestRequestHeadersExact checks the CONNECT on the wire: the two pseudo-headers, then baggage, forwarded and
// traceparent in that order, nothing else (no user-agent, no :scheme/:path), a fresh traceparent per tunnel.
func TestRequestHeadersExact(t *testing.T) {
	ca := newTestCA(t)
	var rec fieldRecorder
	dst := newRawServer(t, ca, func(rs *rawServerConn) {
		for {
			mh, err := rs.nextRequest()
			if err != nil {
				return
			}
			rec.add(mh.Fields)
			_ = rs.respond(mh.StreamID, 200, true)
		}
	})
	pool := dst.pool(PoolConfig{})
	defer pool.Close()

	full := request{
		Authority: "10.0.0.5:8080",
		Baggage: Baggage{ClusterName: "vm-mesh", Namespace: "default", WorkloadName: "web", ServiceName: "web",
			ServiceVersion: "v1", Region: "eu", AvailabilityZone: "eu-1a"},
		ForwardedFor:  netip.MustParseAddrPort("192.168.1.7:41000"),
		ForwardedHost: "web.default.svc.cluster.local",
	}
	bare := request{Authority: "[fd00::5]:8080"}
	for _, req := range []request{full, full, bare} {
		st, err := pool.Dial(context.Background(), dst.with(req))
		if err != nil {
			t.Fatal(err)
		}
		_ = st.Close()
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) != 3 {
		t.Fatalf("server saw %d requests", len(rec.reqs))
	}
	tp := regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-00$`)
	want := [][2]string{
		{":method", "CONNECT"},
		{":authority", "10.0.0.5:8080"},
		{"baggage", "k8s.cluster.name=vm-mesh,k8s.namespace.name=default,k8s.deployment.name=web,service.name=web,service.version=v1,cloud.region=eu,cloud.availability_zone=eu-1a"},
		{"forwarded", `for="192.168.1.7:41000";host=web.default.svc.cluster.local`},
		{"traceparent", ""},
	}
	check := func(got []string, want [][2]string, fields [][2]string) {
		t.Helper()
		if len(fields) != len(want) {
			t.Fatalf("fields %q, want %d fields", fields, len(want))
		}
		for i, w := range want {
			if fields[i][0] != w[0] || (w[1] != "" && fields[i][1] != w[1]) {
				t.Errorf("field %d = %q, want %q", i, fields[i], w)
			}
		}
	}
	pairs := func(i int) [][2]string {
		var out [][2]string
		for _, f := range rec.reqs[i] {
			out = append(out, [2]string{f.Name, f.Value})
		}
		return out
	}
	check(nil, want, pairs(0))
	check(nil, want, pairs(1))
	check(nil, [][2]string{{":method", "CONNECT"}, {":authority", "[fd00::5]:8080"}, {"traceparent", ""}}, pairs(2))
	var traces []string
	for i := range rec.reqs {
		p := pairs(i)
		tr := p[len(p)-1][1]
		if !tp.MatchString(tr) {
			t.Errorf("traceparent %q malformed", tr)
		}
		traces = append(traces, tr)
	}
	if traces[0] == traces[1] {
		t.Errorf("traceparent repeated across tunnels: %q", traces[0])
	}
}

// TestPeerResetIsEOF: a peer's RST_STREAM with NO_ERROR or CANCEL ends our reads with EOF after the data that
// came before it; any other code is a failure with FlagReset.
func TestPeerResetIsEOF(t *testing.T) {
	ca := newTestCA(t)
	codes := make(chan http2.ErrCode, 3)
	defer close(codes) // before the raw server's cleanup waits for its handler
	dst := newRawServer(t, ca, func(rs *rawServerConn) {
		for code := range codes {
			mh, err := rs.nextRequest()
			if err != nil {
				return
			}
			_ = rs.respond(mh.StreamID, 200, false)
			_ = rs.fr.WriteData(mh.StreamID, false, []byte("last words"))
			_ = rs.fr.WriteRSTStream(mh.StreamID, code)
		}
		rs.drain()
	})
	pool := dst.pool(PoolConfig{})
	defer pool.Close()
	for _, tc := range []struct {
		code http2.ErrCode
		eof  bool
	}{{http2.ErrCodeNo, true}, {http2.ErrCodeCancel, true}, {http2.ErrCodeInternal, false}} {
		codes <- tc.code
		st, err := pool.Dial(context.Background(), dst.with(request{Authority: "10.0.0.1:80"}))
		if err != nil {
			t.Fatal(err)
		}
		_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(st)
		if tc.eof {
			if err != nil || string(got) != "last words" {
				t.Errorf("%v: read %q, %v; want the data then EOF", tc.code, got, err)
			}
		} else if err == nil || FlagOf(err) != FlagReset {
			t.Errorf("%v: read %q, %v; want a RESET failure", tc.code, got, err)
		}
		_ = st.Close()
	}
}

// TestRefusedStreamRetried: a stream the server refuses before processing it (REFUSED_STREAM) is sent again.
func TestRefusedStreamRetried(t *testing.T) {
	ca := newTestCA(t)
	dst := newRawServer(t, ca, func(rs *rawServerConn) {
		mh, err := rs.nextRequest()
		if err != nil {
			return
		}
		_ = rs.fr.WriteRSTStream(mh.StreamID, http2.ErrCodeRefusedStream)
		if mh, err = rs.nextRequest(); err != nil {
			return
		}
		_ = rs.respond(mh.StreamID, 200, true)
		rs.drain()
	})
	pool := dst.pool(PoolConfig{})
	defer pool.Close()
	st, err := pool.Dial(context.Background(), dst.with(request{Authority: "10.0.0.1:80"}))
	if err != nil {
		t.Fatalf("dial after a refused stream: %v", err)
	}
	_ = st.Close()
}

// TestKeepaliveDropsDeadPeer: a peer that stops answering PINGs is dropped after the keepalive timeout, and its
// tunnels fail.
func TestKeepaliveDropsDeadPeer(t *testing.T) {
	ca := newTestCA(t)
	dst := newRawServer(t, ca, func(rs *rawServerConn) {
		rs.answerPings = false
		mh, err := rs.nextRequest()
		if err != nil {
			return
		}
		_ = rs.respond(mh.StreamID, 200, false)
		rs.drain()
	})
	pool := dst.pool(PoolConfig{KeepAliveInterval: 50 * time.Millisecond, KeepAliveTimeout: 300 * time.Millisecond})
	defer pool.Close()
	st, err := pool.Dial(context.Background(), dst.with(request{Authority: "10.0.0.1:80"}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Now()
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = st.Read(make([]byte, 1))
	if err == nil || errors.Is(err, io.EOF) || FlagOf(err) != FlagReset {
		t.Fatalf("read on a dead peer: %v, want a RESET failure", err)
	}
	// The first PING goes out one tick (50 ms) after the connection starts, before Dial returns; it is
	// unanswered 300 ms later. The lower bound leaves room for a slow Dial on a loaded machine and still
	// tells a drop at the timeout from one without waiting for it.
	if e := time.Since(start); e < 150*time.Millisecond || e > 3*time.Second {
		t.Errorf("dropped after %v, want about the 300 ms keepalive timeout", e)
	}
	for deadline := time.Now().Add(5 * time.Second); pool.Conns(dst.Key()) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("pool still holds the dead connection")
		}
	}
}

// TestPoolStreamsPerConnection: a key gets a second connection once the first carries 100 streams, or the
// server's smaller SETTINGS_MAX_CONCURRENT_STREAMS.
func TestPoolStreamsPerConnection(t *testing.T) {
	for _, tc := range []struct {
		name       string
		serverMax  int
		open, want int
	}{
		{"client limit 100", 0, 101, 2},
		{"client limit 100, exactly", 0, 100, 1},
		{"server limit 10", 10, 25, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{server: func(c *ServerConfig) { c.MaxConcurrentStreams = tc.serverMax }})
			echo := echoServer(t)
			var streams []*Stream
			for range tc.open {
				streams = append(streams, h.dial(t, echo))
			}
			if n := h.pool.Conns(h.dst.Key()); n != tc.want {
				t.Errorf("%d streams on %d connections, want %d", tc.open, n, tc.want)
			}
			for _, st := range streams {
				_ = st.Close()
			}
		})
	}
}

// TestPoolIdleRelease: a connection without streams is released after the idle timeout, with a GOAWAY.
func TestPoolIdleRelease(t *testing.T) {
	h := newHarness(t, harnessOpts{pool: func(c *PoolConfig) { c.IdleTimeout = 200 * time.Millisecond }})
	st := h.dial(t, echoServer(t))
	_ = st.Close()
	if n := h.pool.Conns(h.dst.Key()); n != 1 {
		t.Fatalf("%d connections right after the tunnel, want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.pool.Conns(h.dst.Key()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle connection never released")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A new tunnel opens a new connection.
	st = h.dial(t, echoServer(t))
	_ = st.Close()
}

// TestPoolKeys: tunnels share a connection only within one key.
func TestPoolKeys(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	echo := echoServer(t)
	other := h.dst
	other.Source = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/other")
	mine, others := h.dst.with(request{Authority: echo.String()}), other.with(request{Authority: echo.String(), ForwardedFor: netip.MustParseAddrPort("10.1.1.1:1000")})
	for _, tun := range []Tunnel{mine, mine, others, others} {
		st, err := h.pool.Dial(context.Background(), tun)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
	}
	if a, b := h.pool.Conns(mine.Key()), h.pool.Conns(others.Key()); a != 1 || b != 1 {
		t.Errorf("connections per key %d and %d, want 1 and 1", a, b)
	}
	// Expected identities are a set: order and duplicates do not make a new key.
	x, y := spiffeid.RequireFromString(serverID), spiffeid.RequireFromString(clientID)
	if NewPoolKey(x, []spiffeid.ID{x, y}, h.srvAddr, netip.Addr{}) != NewPoolKey(x, []spiffeid.ID{y, x, y}, h.srvAddr, netip.Addr{}) {
		t.Error("pool key depends on the order of expected identities")
	}
}

// TestPoolUnexpectedServerIdentity: hbone itself refuses a server whose SPIFFE ID is not in the key, even if the
// TLS configuration let it through.
func TestPoolUnexpectedServerIdentity(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	dst := h.dst
	dst.Expected = []spiffeid.ID{spiffeid.RequireFromString("spiffe://cluster.local/ns/prod/sa/db")}
	_, err := h.pool.Dial(context.Background(), dst.with(request{Authority: echoServer(t).String()}))
	if FlagOf(err) != FlagTLS {
		t.Fatalf("dial to an unexpected identity: %v, want TLS failure", err)
	}
	h.cliTel.waitFor(t, "client failure", func(r *recorder) bool { return len(r.failed) == 1 && r.failed[0] == FlagTLS })
}

// TestPoolDialFailure: nothing listening gives FlagDial; Dial after Close gives FlagShutdown.
func TestPoolDialFailure(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ln := listenLoopback(t)
	dst := h.dst
	dst.Gateway = lnAddr(ln)
	_ = ln.Close()
	if _, err := h.pool.Dial(context.Background(), dst.with(request{Authority: "10.0.0.1:80"})); FlagOf(err) != FlagDial {
		t.Errorf("dial to a closed port: %v, want DIAL", err)
	}
	if _, err := h.pool.Dial(context.Background(), h.dst.with(request{Authority: "bad authority"})); FlagOf(err) != FlagBadRequest {
		t.Errorf("dial with a bad authority: %v, want BAD_REQUEST", err)
	}
	_ = h.pool.Close()
	if _, err := h.pool.Dial(context.Background(), h.dst.with(request{Authority: "10.0.0.1:80"})); FlagOf(err) != FlagShutdown || !errors.Is(err, ErrPoolClosed) {
		t.Errorf("dial after Close: %v, want SHUTDOWN", err)
	}
}

// TestPoolDialerHooks: the pool makes its TCP connections with the configured Dialer (whose Control is where the
// agent sets SO_MARK), for every connection it opens.
func TestPoolDialerHooks(t *testing.T) {
	var marked dialLog
	h := newHarness(t, harnessOpts{pool: func(c *PoolConfig) { c.Dialer = &net.Dialer{Control: marked.control} }})
	echo := echoServer(t)
	st := h.dial(t, echo)
	_ = st.Close()
	if got := marked.list(); len(got) != 1 || got[0] != h.srvAddr.String() {
		t.Errorf("dialer Control saw %v, want [%s]", got, h.srvAddr)
	}

	// Another key: a new connection, through the same dialer.
	st, err := h.pool.Dial(context.Background(), h.dst.with(request{Authority: echo.String(), ForwardedFor: netip.MustParseAddrPort("10.7.7.7:1")}))
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	if got := marked.list(); len(got) != 2 {
		t.Errorf("dialer Control saw %v, want two connections", got)
	}
}
