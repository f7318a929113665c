package hbone

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// dialLog records every upstream connection the server attempts, through its Dialer's Control hook: the same
// hook the agent uses to set SO_MARK.
type dialLog struct {
	mu    sync.Mutex
	addrs []string
}

func (d *dialLog) control(_, address string, _ syscall.RawConn) error {
	d.mu.Lock()
	d.addrs = append(d.addrs, address)
	d.mu.Unlock()
	return nil
}

func (d *dialLog) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.addrs...)
}

// statusHarness is a server whose Authorize callback behaves as the agent's does for a single local workload:
// it refuses targets that are not the connection's local address (400), and otherwise obeys an x-test header
// (deny -> 401, unknown -> 503, slow -> connect takes 100 ms, hang -> connect never finishes, panic).
type statusHarness struct {
	*harness
	calls   atomic.Int32
	dials   dialLog
	slowMu  sync.Mutex
	slowAt  time.Time // when the slow upstream connection was made
	unused  netip.AddrPort
	timeout time.Duration
}

func newStatusHarness(t *testing.T) *statusHarness {
	sh := &statusHarness{timeout: 200 * time.Millisecond}
	sh.harness = newHarness(t, harnessOpts{
		authorize: sh.authorize,
		handler: func(h *testHandler) {
			h.connectTimeout = sh.timeout
			h.dialer = &net.Dialer{Control: sh.dials.control}
		},
	})
	ln := listenLoopback(t)
	sh.unused = lnAddr(ln)
	_ = ln.Close() // nothing listens here any more: connection refused
	return sh
}

func (sh *statusHarness) authorize(ctx context.Context, req *Request) decision {
	sh.calls.Add(1)
	if !req.TargetIsLocal() {
		return deny(FlagWrongTarget, errors.New("target is not this connection's local address"))
	}
	switch req.Header("x-test") {
	case "deny":
		return deny(FlagDenied, errors.New("no policy allows it"))
	case "unknown":
		return deny(FlagUnknownWorkload, nil)
	case "panic":
		panic("authorize bug")
	case "slow":
		d := allow(req.Target.Addr)
		d.dial = func(ctx context.Context, target netip.AddrPort) (net.Conn, error) {
			time.Sleep(100 * time.Millisecond)
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", target.String())
			sh.slowMu.Lock()
			sh.slowAt = time.Now()
			sh.slowMu.Unlock()
			return c, err
		}
		return d
	case "hang":
		d := allow(req.Target.Addr)
		d.dial = func(ctx context.Context, target netip.AddrPort) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return d
	}
	return allow(req.Target.Addr)
}

// TestStatusCodes covers every answer of spec/hbone.md's response table, each with its flag, and checks which
// ones reached the callback.
func TestStatusCodes(t *testing.T) {
	sh := newStatusHarness(t)
	echo := echoServer(t)
	cases := []struct {
		name         string
		headers      []string
		want         int
		flag         Flag
		callsAuthz   bool
		dialsAllowed bool
	}{
		{"200 established", []string{":method", "CONNECT", ":authority", echo.String()}, 200, FlagNone, true, true},
		{"400 method GET", []string{":method", "GET", ":authority", echo.String(), ":scheme", "https", ":path", "/"}, 400, FlagBadRequest, false, false},
		{"400 method POST", []string{":method", "POST", ":authority", echo.String(), ":scheme", "https", ":path", "/"}, 400, FlagBadRequest, false, false},
		{"400 authority garbage", []string{":method", "CONNECT", ":authority", "not an authority"}, 400, FlagBadRequest, false, false},
		{"400 authority without port", []string{":method", "CONNECT", ":authority", "127.0.0.1"}, 400, FlagBadRequest, false, false},
		{"400 authority missing", []string{":method", "CONNECT"}, 400, FlagBadRequest, false, false},
		{"400 CONNECT with path", []string{":method", "CONNECT", ":authority", echo.String(), ":path", "/"}, 400, FlagBadRequest, false, false},
		{"400 wrong target address", []string{":method", "CONNECT", ":authority", "127.0.0.2:" + portOf(echo)}, 400, FlagWrongTarget, true, false},
		{"401 denied", []string{":method", "CONNECT", ":authority", echo.String(), "x-test", "deny"}, 401, FlagDenied, true, false},
		{"401 admin port 15000", []string{":method", "CONNECT", ":authority", "127.0.0.1:15000", "x-test", "deny"}, 401, FlagDenied, true, false},
		{"503 unknown workload", []string{":method", "CONNECT", ":authority", echo.String(), "x-test", "unknown"}, 503, FlagUnknownWorkload, true, false},
		{"503 illegal port 15001", []string{":method", "CONNECT", ":authority", "127.0.0.1:15001"}, 503, FlagIllegalPort, false, false},
		{"503 illegal port 15006", []string{":method", "CONNECT", ":authority", "127.0.0.1:15006"}, 503, FlagIllegalPort, false, false},
		{"503 illegal port 15008", []string{":method", "CONNECT", ":authority", "127.0.0.1:15008"}, 503, FlagIllegalPort, false, false},
		{"503 upstream refused", []string{":method", "CONNECT", ":authority", sh.unused.String()}, 503, FlagUpstreamConnect, true, true},
		{"503 upstream timeout", []string{":method", "CONNECT", ":authority", echo.String(), "x-test", "hang"}, 503, FlagUpstreamTimeout, true, false},
		{"503 authorize panic", []string{":method", "CONNECT", ":authority", echo.String(), "x-test", "panic"}, 503, FlagInternal, true, false},
		{"431 header list too large", append([]string{":method", "CONNECT", ":authority", echo.String()}, bigHeaders(13, 8<<10)...), 431, FlagHeadersTooLarge, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, sh.harness)
			calls0 := sh.calls.Load()
			dials0 := len(sh.dials.list())
			failed0 := sh.srvTel.failures()
			start := time.Now()
			status, end, err := rc.awaitStatus(rc.request(tc.headers...))
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if status != tc.want {
				t.Fatalf("status %d, want %d", status, tc.want)
			}
			if tc.want != 200 && !end {
				t.Errorf("refusal without END_STREAM")
			}
			if got := sh.calls.Load() != calls0; got != tc.callsAuthz {
				t.Errorf("authorize called: %v, want %v", got, tc.callsAuthz)
			}
			if tc.flag == FlagUpstreamTimeout {
				if e := time.Since(start); e < sh.timeout {
					t.Errorf("answered after %v, before the %v connect timeout", e, sh.timeout)
				}
			}
			newDials := len(sh.dials.list()) - dials0
			if !tc.dialsAllowed && newDials != 0 {
				t.Errorf("server dialed %v for a refused tunnel", sh.dials.list()[dials0:])
			}
			if tc.flag != FlagNone {
				sh.srvTel.waitFor(t, "TunnelFailed", func(r *recorder) bool { return len(r.failed) > failed0 })
				got, gotErr := sh.srvTel.failure(failed0)
				if got != tc.flag {
					t.Errorf("telemetry flag %v (%v), want %v", got, gotErr, tc.flag)
				}
				var e *Error
				if !errors.As(gotErr, &e) || e.Status != tc.want {
					t.Errorf("telemetry error %v, want an *Error with status %d", gotErr, tc.want)
				}
			}
		})
	}
	// Nothing but the echo target and the refused port was ever dialed.
	for _, a := range sh.dials.list() {
		if a != echo.String() && a != sh.unused.String() {
			t.Errorf("server dialed %s, which no decision returned", a)
		}
	}
}

// bigHeaders returns n headers of size bytes each (their sum over the 64 KiB limit, each under it).
func bigHeaders(n, size int) []string {
	var kv []string
	for i := range n {
		kv = append(kv, "x-big-"+strconv.Itoa(i), strings.Repeat("a", size))
	}
	return kv
}

func portOf(ap netip.AddrPort) string { return strings.TrimPrefix(ap.String(), ap.Addr().String()+":") }

// Test200AfterUpstream: the 200 goes out only once the upstream connection exists (unlike Istio's Go server).
func Test200AfterUpstream(t *testing.T) {
	sh := newStatusHarness(t)
	echo := echoServer(t)
	rc := dialRaw(t, sh.harness)
	status, _, err := rc.awaitStatus(rc.connect(echo.String(), "x-test", "slow"))
	answered := time.Now()
	if err != nil || status != 200 {
		t.Fatalf("status %d, err %v", status, err)
	}
	sh.slowMu.Lock()
	connected := sh.slowAt
	sh.slowMu.Unlock()
	if connected.IsZero() || answered.Before(connected) {
		t.Fatalf("200 at %v, upstream connected at %v", answered, connected)
	}
}

// TestPoolNon200 checks the client side of a refusal: a typed *Error with FlagConnect and the status.
func TestPoolNon200(t *testing.T) {
	sh := newStatusHarness(t)
	echo := echoServer(t)
	for _, tc := range []struct {
		authority string
		want      int
	}{
		{"127.0.0.1:15008", 503},
		{"127.0.0.2:" + portOf(echo), 400},
		{sh.unused.String(), 503},
	} {
		_, err := sh.pool.Dial(context.Background(), sh.dst.with(request{Authority: tc.authority}))
		var e *Error
		if !errors.As(err, &e) || e.Flag != FlagConnect || e.Status != tc.want {
			t.Errorf("dial %s: %v, want *Error{CONNECT, %d}", tc.authority, err, tc.want)
		}
		if FlagOf(err) != FlagConnect {
			t.Errorf("FlagOf = %v", FlagOf(err))
		}
	}
	// The refusals did not cost the pooled connection.
	if n := sh.pool.Conns(sh.dst.Key()); n != 1 {
		t.Errorf("pool holds %d connections, want 1", n)
	}
	sh.cliTel.waitFor(t, "client failures", func(r *recorder) bool { return len(r.failed) == 3 })
	for _, f := range sh.cliTel.failed {
		if f != FlagConnect {
			t.Errorf("client telemetry flag %v, want CONNECT", f)
		}
	}
}
