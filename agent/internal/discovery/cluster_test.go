package discovery

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/leak"

	"github.com/hashicorp/memberlist"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

var (
	testKey  = bytes.Repeat([]byte{0x42}, KeySize)
	otherKey = bytes.Repeat([]byte{0x17}, KeySize)
)

// testTiming shortens memberlist's timings for loopback tests: gossip and push/pull run often, so that the
// tests are quick. Failure detection keeps memberlist's LAN values (probe every second, 500 ms timeout): dozens
// of nodes in one process on a loaded 2-core machine miss tighter deadlines, and false deaths make the pool flap.
// An isolated node's self-doubt (Lifeguard awareness) is capped lower so that a cut-off node gives up on the others
// within seconds.
func testTiming(c *memberlist.Config) {
	c.AwarenessMaxMultiplier = 3
	c.GossipInterval = 50 * time.Millisecond
	c.PushPullInterval = time.Second
	c.SuspicionMult = 3
	c.SuspicionMaxTimeoutMult = 3
	c.GossipToTheDeadTime = 2 * time.Second
	c.TCPTimeout = 2 * time.Second
}

// testNode is one Discovery running in this process, on 127.0.0.1 with a kernel-chosen port.
type testNode struct {
	name   string
	d      *Discovery
	tr     *testTransport
	logs   *logSink
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// nodeConfig adjusts the options of a test node before New.
type nodeConfig func(*testNode, *Options)

func withSeeds(nodes ...*testNode) nodeConfig {
	return func(_ *testNode, o *Options) {
		for _, n := range nodes {
			o.Join = append(o.Join, n.d.LocalAddr().String())
		}
	}
}

func withKeys(keys ...[]byte) nodeConfig { return func(_ *testNode, o *Options) { o.Keys = keys } }

func withGrace(g time.Duration) nodeConfig {
	return func(_ *testNode, o *Options) { o.GracePeriod = g }
}

func withDevMode(_ *testNode, o *Options) { o.InsecureDevMode = true }

// withProductionTiming keeps memberlist's and discovery's production timings (benchmarks).
func withProductionTiming(n *testNode, o *Options) { o.Tuning = Tuning{Memberlist: n.wrap} }

// startNode builds, publishes and runs a node; it is stopped (gracefully) when the test ends.
func startNode(t testing.TB, name string, rec *Record, cfgs ...nodeConfig) *testNode {
	t.Helper()
	n := &testNode{name: name, logs: &logSink{}, done: make(chan error, 1)}
	opts := Options{
		NodeName:     name,
		Bind:         netip.MustParseAddrPort("127.0.0.1:0"),
		Keys:         [][]byte{testKey},
		GracePeriod:  2 * time.Second,
		AgentVersion: "test",
		Trust:        testTrust(),
		Logger:       slog.New(n.logs),
		Tuning: Tuning{
			Memberlist: func(c *memberlist.Config) {
				testTiming(c)
				n.wrap(c)
			},
			JoinBackoffMin: 100 * time.Millisecond,
			JoinBackoffMax: time.Second,
			Reconnect:      time.Second,
			RepairDelay:    time.Second,
			LeaveTimeout:   time.Second,
			WarnInterval:   time.Second,
			PublishEvery:   50 * time.Millisecond, // TestPublishPace tests the pace
		},
	}
	for _, c := range cfgs {
		c(n, &opts)
	}
	d, err := New(opts)
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	n.d = d
	if rec != nil {
		if err := d.SetLocal(*rec); err != nil {
			t.Fatalf("SetLocal(%s): %v", name, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { n.done <- d.Run(ctx) }()
	select {
	case <-d.Started():
	case err := <-n.done:
		t.Fatalf("Run(%s): %v", name, err)
	}
	t.Cleanup(func() { n.stop(t) })
	return n
}

// wrap puts the test transport under memberlist.
func (n *testNode) wrap(c *memberlist.Config) {
	n.tr = wrapTransport(c.Transport.(memberlist.NodeAwareTransport))
	c.Transport = n.tr
}

// stop leaves gracefully and waits for Run to return.
func (n *testNode) stop(t testing.TB) {
	n.once.Do(func() {
		n.cancel()
		select {
		case err := <-n.done:
			if err != nil {
				t.Errorf("Run(%s) returned %v", n.name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run(%s) did not return within 30s of its context ending", n.name)
		}
	})
}

// stopAll stops nodes concurrently, as hosts shutting down at once would.
func stopAll(t testing.TB, nodes []*testNode) {
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() { n.stop(t) })
	}
	wg.Wait()
}

// testRecord is a record with count workloads; addresses are derived from id so that every node's differ.
func testRecord(id, count int) *Record {
	r := &Record{}
	for i := range count {
		r.Workloads = append(r.Workloads, testWorkload(id, i))
	}
	return r
}

func testWorkload(id, i int) *state.Workload {
	return &state.Workload{
		Name:           fmt.Sprintf("w%d", i),
		Namespace:      "default",
		ServiceAccount: "sa",
		TrustDomain:    "cluster.local",
		Addresses:      []netip.Addr{netip.AddrFrom4([4]byte{10, byte(id >> 8), byte(id), byte(i + 1)})},
		Tunnel:         state.TunnelHBONE,
		Labels:         map[string]string{"app": "w"},
		Healthy:        true,
		Capacity:       1,
	}
}

// workloadCount counts n's remote workloads without building its output: tests poll it for every node.
func (d *Discovery) workloadCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, p := range d.table.peers {
		if p.current != nil {
			n += len(p.current.workloads)
		}
	}
	return n
}

// hasWorkload reports whether n sees the workload uid.
func (n *testNode) hasWorkload(uid string) bool {
	n.d.mu.Lock() // not Workloads: it derives the whole view, and large pools poll every member
	defer n.d.mu.Unlock()
	for _, p := range n.d.table.peers {
		if p.current != nil && slices.ContainsFunc(p.current.workloads, func(w *state.Workload) bool { return w.UID == uid }) {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds or the bound passes; it returns how long it took.
func waitFor(t testing.TB, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			t.Fatalf("%s: not within %s", what, bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// holdsFor checks that cond stays true for the whole duration.
func holdsFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !cond() {
			t.Fatalf("%s: stopped holding", what)
		}
	}
}

// logSink is a slog handler that keeps warnings and errors for the test to inspect.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *logSink) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (s *logSink) WithAttrs([]slog.Attr) slog.Handler           { return s }
func (s *logSink) WithGroup(string) slog.Handler                { return s }
func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	s.mu.Lock()
	s.lines = append(s.lines, b.String())
	s.mu.Unlock()
	return nil
}

// find returns the kept lines that contain every one of parts.
func (s *logSink) find(parts ...string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range s.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			out = append(out, l)
		}
	}
	return out
}

// discoveryLeaks are discovery's and memberlist's goroutines: none may outlive a test's nodes. Register the check
// first, so that it runs after the nodes' cleanups.
var discoveryLeaks = leak.Options{Match: []string{"hashicorp/memberlist", "discovery.(*"}, NoFDs: true, Within: 15 * time.Second}
