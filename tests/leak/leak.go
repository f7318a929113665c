// Package leak is the tests' one check that what a test started has ended: no goroutine and no file descriptor
// is left behind. Every package's tests use it (an agent runs for months: one goroutine or socket per tunnel, per
// reload or per reconnection is an outage in slow motion).
package leak

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Options say what Check counts. The zero value counts every goroutine and file descriptor and waits 10 s.
type Options struct {
	// Match counts only the goroutines whose stack contains one of these strings, such as the package's name
	// and a dot ("hbone."); nil counts them all.
	Match []string
	// NoFDs counts goroutines only: for tests whose fixtures (a gRPC server, a SPIRE agent) keep sockets open
	// past the code under test.
	NoFDs bool
	// Within is how long the counts may take to come back down (default 10 s): closed connections and
	// cancelled goroutines end soon after, not at once.
	Within time.Duration
}

// Check records the goroutines and open file descriptors now. The returned func waits for both to come back
// to at most those counts, and fails the test otherwise with the stacks of the goroutines counted and the file
// descriptors open.
func Check(t testing.TB, o Options) (verify func()) {
	t.Helper()
	if !o.NoFDs {
		// The runtime's network poller (an epoll fd and an eventfd) opens on the first socket and stays: open it
		// before counting.
		if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
			_ = ln.Close()
		}
	}
	g0, fds0 := goroutines(o.Match), len(openFDs(t, o))
	return func() {
		t.Helper()
		within := o.Within
		if within == 0 {
			within = 10 * time.Second
		}
		var g, fds int
		for deadline := time.Now().Add(within); ; time.Sleep(20 * time.Millisecond) {
			g, fds = goroutines(o.Match), len(openFDs(t, o))
			if g <= g0 && fds <= fds0 {
				return
			}
			if time.Now().After(deadline) {
				break
			}
		}
		t.Errorf("leak after %v: goroutines %d -> %d, file descriptors %d -> %d\nopen: %s\n%s",
			within, g0, g, fds0, fds, strings.Join(openFDs(t, o), " "), strings.Join(stacks(o.Match), "\n\n"))
	}
}

// AtCleanup is Check verified when the test ends. Call it before starting what it watches: cleanups run last
// registered first, so the fixtures' own cleanups have run by then.
func AtCleanup(t testing.TB, o Options) {
	t.Helper()
	t.Cleanup(Check(t, o))
}

func goroutines(match []string) int { return len(stacks(match)) }

// stacks are the stacks of the goroutines that match (all when match is empty).
func stacks(match []string) []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if len(match) == 0 || containsAny(g, match) {
			out = append(out, g)
		}
	}
	return out
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// openFDs lists this process's file descriptors and what they point at (none with NoFDs).
func openFDs(t testing.TB, o Options) []string {
	if o.NoFDs {
		return nil
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("leak: cannot list file descriptors: %v", err)
	}
	fds := make([]string, 0, len(entries))
	for _, e := range entries {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fds = append(fds, fmt.Sprintf("%s->%s", e.Name(), target))
	}
	return fds
}
