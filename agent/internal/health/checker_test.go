package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/leak"
)

func httpServer(t *testing.T, h http.Handler) (*httptest.Server, netip.AddrPort) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, srv.Listener.Addr().(*net.TCPAddr).AddrPort()
}

// A TCP workload goes down when its listener closes and comes back when it
// reopens on the same port; onChange sees each flip exactly once.
func TestTCPDownAndUp(t *testing.T) {
	leak.AtCleanup(t, leak.Options{Within: 5 * time.Second})
	ln := listenTCP(t, "127.0.0.1:0")
	addr := ln.addr()
	c, rec := newChecker(t)
	mustSet(t, c, map[string]Check{"web": fast(KindTCP, addr, 2, 1)})
	run(t, c)

	before := waitChecks(t, c, "web", 3)
	if !before.Healthy {
		t.Fatalf("status with the listener up: %+v", before)
	}

	ln.close()
	down := rec.waitFor(1)[0]
	if down.workload != "web" || down.status.Healthy {
		t.Fatalf("first flip = %+v, want web unhealthy", down)
	}
	if !strings.Contains(down.status.LastError, "health: tcp "+addr.String()+": connect: ") {
		t.Fatalf("LastError = %q", down.status.LastError)
	}
	if down.status.Failures < 2 || !down.status.Since.After(before.Since) {
		t.Fatalf("unhealthy status = %+v (before %+v)", down.status, before)
	}

	listenTCP(t, addr.String())
	up := rec.waitFor(2)[1]
	if up.workload != "web" || !up.status.Healthy || up.status.LastError != "" || !up.status.Since.After(down.status.Since) {
		t.Fatalf("second flip = %+v, want web healthy", up)
	}

	waitChecks(t, c, "web", up.status.Checks+5)
	if n := len(rec.all()); n != 2 {
		t.Fatalf("onChange called %d times, want 2: %+v", n, rec.all())
	}
}

// An HTTP workload follows its status code: 200 healthy, 500 unhealthy, 200
// healthy again. Checks go through the dial function New was given.
func TestHTTPStatus(t *testing.T) {
	leak.AtCleanup(t, leak.Options{Within: 5 * time.Second})
	var code atomic.Int32
	code.Store(http.StatusOK)
	_, addr := httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(code.Load()))
	}))
	var dials atomic.Int32
	rec := &recorder{t: t}
	c := New(func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}, nil, rec.onChange)
	mustSet(t, c, map[string]Check{"api": fast(KindHTTP, addr, 2, 1)})
	run(t, c)

	waitChecks(t, c, "api", 2)
	code.Store(http.StatusInternalServerError)
	down := rec.waitFor(1)[0]
	if down.status.Healthy || down.status.LastError != "health: http "+addr.String()+"/: status 500" {
		t.Fatalf("flip = %+v", down)
	}
	code.Store(http.StatusNoContent)
	up := rec.waitFor(2)[1]
	if !up.status.Healthy || up.status.LastError != "" {
		t.Fatalf("flip = %+v", up)
	}
	waitChecks(t, c, "api", up.status.Checks+3)
	if n := len(rec.all()); n != 2 {
		t.Fatalf("onChange called %d times, want 2: %+v", n, rec.all())
	}
	if s := status(t, c, "api"); dials.Load() < int32(s.Checks) {
		t.Fatalf("%d dials for %d checks: the given dial function was not used for each", dials.Load(), s.Checks)
	}
}

// A server that never answers fails the check at its timeout.
func TestHTTPTimeout(t *testing.T) {
	leak.AtCleanup(t, leak.Options{Within: 5 * time.Second})
	release := make(chan struct{})
	_, addr := httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release) }) // runs before the server closes
	c, rec := newChecker(t)
	k := fast(KindHTTP, addr, 1, 1)
	k.Interval, k.Timeout = 50*time.Millisecond, 30*time.Millisecond
	mustSet(t, c, map[string]Check{"slow": k})
	run(t, c)

	down := rec.waitFor(1)[0]
	if want := "health: http " + addr.String() + "/: timeout after 30ms"; down.status.Healthy || down.status.LastError != want {
		t.Fatalf("flip = %+v, want LastError %q", down, want)
	}
}

// The dial function gets the check's deadline: a dial that never connects
// fails at the timeout.
func TestTCPTimeout(t *testing.T) {
	leak.AtCleanup(t, leak.Options{Within: 5 * time.Second})
	rec := &recorder{t: t}
	c := New(func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}, nil, rec.onChange)
	k := fast(KindTCP, netip.MustParseAddrPort("192.0.2.1:80"), 1, 1)
	k.Interval, k.Timeout = 50*time.Millisecond, 30*time.Millisecond
	mustSet(t, c, map[string]Check{"blackhole": k})
	run(t, c)

	down := rec.waitFor(1)[0]
	if want := "health: tcp 192.0.2.1:80: timeout after 30ms"; down.status.LastError != want {
		t.Fatalf("LastError = %q, want %q", down.status.LastError, want)
	}
}

// A redirect counts as healthy and is not followed; the request carries the
// target as Host and the configured path, and never reuses a connection.
func TestHTTPRedirectNotFollowed(t *testing.T) {
	leak.AtCleanup(t, leak.Options{Within: 5 * time.Second})
	var hits, followed, conns atomic.Int32
	var host, uri atomic.Value
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		host.Store(r.Host)
		uri.Store(r.RequestURI)
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		followed.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().(*net.TCPAddr).AddrPort()

	c, rec := newChecker(t)
	k := fast(KindHTTP, addr, 1, 1)
	k.Path = "/ready?from=agent"
	k.Interval, k.Timeout = 500*time.Millisecond, 500*time.Millisecond // asserts no failure at all
	mustSet(t, c, map[string]Check{"web": k})
	stop := run(t, c)
	s := waitChecks(t, c, "web", 3)
	stop()

	if !s.Healthy || s.Failures != 0 || len(rec.all()) != 0 {
		t.Fatalf("status %+v, flips %+v: want healthy, no failures", s, rec.all())
	}
	if followed.Load() != 0 {
		t.Fatalf("the redirect was followed %d times", followed.Load())
	}
	if host.Load() != addr.String() || uri.Load() != "/ready?from=agent" {
		t.Fatalf("request Host %q URI %q", host.Load(), uri.Load())
	}
	if conns.Load() < hits.Load() {
		t.Fatalf("%d requests over %d connections: connections were reused", hits.Load(), conns.Load())
	}
}

// A healthy endpoint that streams an endless body passes: the check reads a
// few KB and closes, it does not wait for the end (if it did, every check
// would time out).
func TestHTTPBodyNotDrained(t *testing.T) {
	leak.AtCleanup(t, leak.Options{Within: 5 * time.Second})
	_, addr := httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 1024))
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	c, rec := newChecker(t)
	mustSet(t, c, map[string]Check{"stream": {Kind: KindHTTP, Target: addr, Interval: 2 * time.Second, UnhealthyThreshold: 1}})
	run(t, c)
	s := waitChecks(t, c, "stream", 1)
	if !s.Healthy || s.Failures != 0 || len(rec.all()) != 0 {
		t.Fatalf("status %+v, flips %+v", s, rec.all())
	}
}

// Thresholds count consecutive results: one failure under an unhealthy
// threshold of 2 and one success under a healthy threshold of 2 change
// nothing.
func TestThresholds(t *testing.T) {
	leak.AtCleanup(t, leak.Options{Within: 5 * time.Second})
	script := []int{200, 500, 200, 500, 500, 200, 500, 200, 200} // then 200 forever
	var n atomic.Int32
	_, addr := httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		if i < len(script) {
			w.WriteHeader(script[i])
		}
	}))
	c, rec := newChecker(t)
	// Exact counts need every check to reach the server and none to time out
	// (14 checks on a loaded machine): give each plenty of time.
	k := fast(KindHTTP, addr, 2, 2)
	k.Interval, k.Timeout = 250*time.Millisecond, 250*time.Millisecond
	mustSet(t, c, map[string]Check{"api": k})
	run(t, c)

	events := rec.waitFor(2)
	if e := events[0].status; e.Healthy || e.Checks != 5 || e.Failures != 3 {
		t.Fatalf("first flip %+v: want unhealthy at check 5 with 3 failures", e)
	}
	if e := events[1].status; !e.Healthy || e.Checks != 9 || e.Failures != 4 {
		t.Fatalf("second flip %+v: want healthy at check 9 with 4 failures", e)
	}
	waitChecks(t, c, "api", 14)
	if got := rec.all(); len(got) != 2 {
		t.Fatalf("onChange called %d times, want 2: %+v", len(got), got)
	}
}

// A new workload is healthy before any check and is checked at once, not
// after its first interval.
func TestNewWorkloadCheckedAtOnce(t *testing.T) {
	leak.AtCleanup(t, leak.Options{Within: 5 * time.Second})
	ln := listenTCP(t, "127.0.0.1:0")
	c, rec := newChecker(t)
	k := Check{Kind: KindTCP, Target: ln.addr(), Interval: time.Hour}
	before := time.Now()
	mustSet(t, c, map[string]Check{"db": k})
	if s := status(t, c, "db"); !s.Healthy || s.Checks != 0 || s.Since.Before(before) {
		t.Fatalf("status before Run: %+v", s)
	}
	run(t, c)
	if s := waitChecks(t, c, "db", 1); !s.Healthy || s.Failures != 0 || len(rec.all()) != 0 {
		t.Fatalf("status after the first check: %+v", s)
	}
}

// Set keeps an unchanged check's state and timing, restarts a changed one
// with its status kept, adds new ones healthy and forgets removed ones.
func TestSetReplaces(t *testing.T) {
	leak.AtCleanup(t, leak.Options{Within: 5 * time.Second})
	ln := listenTCP(t, "127.0.0.1:0")
	dead := freePort(t)
	c, rec := newChecker(t)
	slow := Check{Kind: KindTCP, Target: ln.addr(), Interval: time.Hour}
	failing := fast(KindTCP, dead, 1, 1)
	mustSet(t, c, map[string]Check{"slow": slow, "moving": failing})
	run(t, c)

	down := rec.waitFor(1)[0]
	if down.workload != "moving" || down.status.Healthy {
		t.Fatalf("flip = %+v, want moving unhealthy", down)
	}
	slowBefore := waitChecks(t, c, "slow", 1)

	// "moving" now points at the live listener: its unhealthy status is kept,
	// so recovering is a flip onChange sees.
	moved := fast(KindTCP, ln.addr(), 1, 1)
	mustSet(t, c, map[string]Check{"slow": slow, "moving": moved, "new": fast(KindTCP, ln.addr(), 1, 1)})
	if s := status(t, c, "new"); !s.Healthy {
		t.Fatalf("new workload starts %+v", s)
	}
	up := rec.waitFor(2)[1]
	if up.workload != "moving" || !up.status.Healthy || up.status.Checks <= down.status.Checks {
		t.Fatalf("flip = %+v, want moving healthy with its check count kept", up)
	}
	waitChecks(t, c, "new", 3)
	if s := status(t, c, "slow"); s != slowBefore {
		t.Fatalf("unchanged check was restarted: %+v, before %+v", s, slowBefore)
	}

	mustSet(t, c, map[string]Check{"slow": slow})
	if _, ok := c.Status("moving"); ok {
		t.Fatal("removed workload still has a status")
	}
	if _, ok := c.Status("new"); ok {
		t.Fatal("removed workload still has a status")
	}
}

// An invalid set changes nothing.
func TestSetRejectsInvalid(t *testing.T) {
	c, _ := newChecker(t)
	good := Check{Kind: KindTCP, Target: target}
	mustSet(t, c, map[string]Check{"a": good})
	err := c.Set(map[string]Check{"b": good, "c": {Kind: "udp", Target: target}, "": good})
	if err == nil {
		t.Fatal("Set accepted an invalid check")
	}
	for _, want := range []string{`health: workload "c": unknown kind "udp"`, "a workload has no name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if _, ok := c.Status("a"); !ok {
		t.Error("old check dropped by a rejected Set")
	}
	if _, ok := c.Status("b"); ok {
		t.Error("a rejected Set added a check")
	}
}

// Removing checks stops their goroutines while Run goes on; cancelling Run
// stops the rest.
func TestSetStopsRemovedProbes(t *testing.T) {
	leak.AtCleanup(t, leak.Options{Within: 5 * time.Second})
	const probe, runLoop = "health.(*Checker).probe(", "health.(*Checker).Run("
	ln := listenTCP(t, "127.0.0.1:0")
	c, _ := newChecker(t)
	stop := run(t, c)
	checks := make(map[string]Check)
	for i := range 5 {
		checks[fmt.Sprint("w", i)] = fast(KindTCP, ln.addr(), 2, 1)
	}
	mustSet(t, c, checks)
	for name := range checks {
		waitChecks(t, c, name, 2)
	}
	if n := goroutinesIn(probe); n != 5 {
		t.Fatalf("%d probe goroutines for 5 checks", n)
	}

	mustSet(t, c, map[string]Check{"w0": checks["w0"]})
	eventually(t, "4 probes to stop", func() bool { return goroutinesIn(probe) == 1 })
	s := waitChecks(t, c, "w0", 2)
	waitChecks(t, c, "w0", s.Checks+2) // the kept probe still runs

	stop()
	if n, r := goroutinesIn(probe), goroutinesIn(runLoop); n != 0 || r != 0 {
		t.Fatalf("after Run returned: %d probe goroutines, %d Run loops", n, r)
	}
}

// onChange is never called concurrently, even when many workloads flip at
// the same time.
func TestOnChangeSerialised(t *testing.T) {
	leak.AtCleanup(t, leak.Options{Within: 5 * time.Second})
	dead := freePort(t)
	c, rec := newChecker(t)
	checks := make(map[string]Check)
	for i := range 10 {
		checks[fmt.Sprint("w", i)] = fast(KindTCP, dead, 1, 1)
	}
	mustSet(t, c, checks)
	run(t, c)
	rec.waitFor(10)
	listenTCP(t, dead.String())
	eventually(t, "every workload back to healthy", func() bool {
		flips := make(map[string]int)
		for _, e := range rec.all() {
			flips[e.workload]++
		}
		for name := range checks {
			if s, _ := c.Status(name); !s.Healthy || flips[name] < 2 {
				return false
			}
		}
		return true
	})
}

func TestRunTwice(t *testing.T) {
	c, _ := newChecker(t)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Run(done); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Run(ctx); err == nil || !strings.Contains(err.Error(), "Run called twice") {
		t.Fatalf("second Run: %v", err)
	}
}
