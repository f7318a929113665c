package health

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fast is a check tuned for tests: small interval, thresholds as given. The
// timeout is as long as the interval allows, so that a loopback check on a
// loaded machine (-race, shared cores) does not time out: tests assert the
// exact error of a flip, and a goroutine can wait 50 ms for a core there.
func fast(kind Kind, to netip.AddrPort, unhealthy, healthy int) Check {
	return Check{Kind: kind, Target: to, Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond,
		UnhealthyThreshold: unhealthy, HealthyThreshold: healthy}
}

// eventually polls cond until it holds or a few seconds passed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

type event struct {
	workload string
	status   Status
}

// recorder is an onChange that keeps every call and fails the test if two
// calls overlap.
type recorder struct {
	t        *testing.T
	inFlight atomic.Int32
	mu       sync.Mutex
	events   []event
}

func (r *recorder) onChange(workload string, s Status) {
	if r.inFlight.Add(1) != 1 {
		r.t.Errorf("onChange called concurrently (workload %s)", workload)
	}
	time.Sleep(time.Millisecond) // widen the window for overlapping calls
	r.mu.Lock()
	r.events = append(r.events, event{workload, s})
	r.mu.Unlock()
	r.inFlight.Add(-1)
}

func (r *recorder) all() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events...)
}

// waitFor waits until n events were recorded and returns them.
func (r *recorder) waitFor(n int) []event {
	r.t.Helper()
	eventually(r.t, "onChange calls", func() bool { return len(r.all()) >= n })
	return r.all()
}

// newChecker returns a Checker dialling with a plain net.Dialer and recording
// onChange calls.
func newChecker(t *testing.T) (*Checker, *recorder) {
	rec := &recorder{t: t}
	return New((&net.Dialer{}).DialContext, nil, rec.onChange), rec
}

// run starts c.Run and returns a func that cancels it and waits for it to
// return nil; the same func runs at cleanup.
func run(t *testing.T, c *Checker) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Run did not return after its context was cancelled")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func mustSet(t *testing.T, c *Checker, checks map[string]Check) {
	t.Helper()
	if err := c.Set(checks); err != nil {
		t.Fatalf("Set: %v", err)
	}
}

func status(t *testing.T, c *Checker, workload string) Status {
	t.Helper()
	s, ok := c.Status(workload)
	if !ok {
		t.Fatalf("no status for %s", workload)
	}
	return s
}

// waitChecks waits until workload has completed at least n checks.
func waitChecks(t *testing.T, c *Checker, workload string, n uint64) Status {
	t.Helper()
	var s Status
	eventually(t, workload+" checks", func() bool {
		s, _ = c.Status(workload)
		return s.Checks >= n
	})
	return s
}

// tcpServer accepts and closes connections on addr until stopped.
type tcpServer struct {
	ln   net.Listener
	done chan struct{}
}

func listenTCP(t *testing.T, addr string) *tcpServer {
	t.Helper()
	var ln net.Listener
	var err error
	// Reopening a just-closed port can race with nothing in a test, but retry
	// briefly anyway rather than fail on a transient EADDRINUSE.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	s := &tcpServer{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.Close()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *tcpServer) addr() netip.AddrPort { return s.ln.Addr().(*net.TCPAddr).AddrPort() }

func (s *tcpServer) close() {
	_ = s.ln.Close() // a second close (at cleanup) fails harmlessly
	<-s.done
}

// freePort returns a loopback address nothing listens on.
func freePort(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	_ = ln.Close()
	return ap
}

// goroutinesIn counts the goroutines whose stack has fn in it.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}
