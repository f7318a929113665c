//go:build scaleharness

package app

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ambient-agent/ambient-agent/agent/internal/scalegen"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
)

// The scale harness (make bench-scale, docs/scale.md): the agent's own update path, fed the records of a mesh
// of scale.n workloads (scalegen's shape) through discovery's Deliver hook, without sockets.

// scaleSizes are the mesh sizes, in workloads.
var scaleSizes = []int{1000, 10000, 50000}

// scaleApp is an agent with gossip (not running: records are delivered by hand) that knows the mesh of n
// workloads, with a settled view (the snapshot in use is the established one, as after the first minute).
func scaleApp(tb testing.TB, n int) *App {
	tb.Helper()
	cfg := testConfig(tb, fmt.Sprintf(`
[node]
name = "local"
[gossip]
enabled = true
bind = "127.0.0.1:17946"
insecure_dev_mode = true
accept_unsigned = true
allowed_hostnames = [%q]
[[workload]]
name = "web"
addresses = ["192.168.77.1"]
[[workload]]
name = "db"
service_account = "db"
addresses = ["192.168.77.2"]
[[service]]
name = "web"
workloads = ["web"]
ports = [{ port = 80 }]
`, scalegen.Domain))
	a := &App{log: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: telemetry.NewMetrics(prometheus.NewRegistry(), "scale")}
	a.cfg.Store(cfg)
	a.state = state.NewStore(a.localInput(cfg))
	d, err := newDiscovery(cfg, a)
	if err != nil {
		tb.Fatal(err)
	}
	a.gossip = d
	a.gossipMet.Store(time.Now().Add(-time.Hour).UnixNano())
	for h := range scalegen.Hosts(n) {
		if err := d.Deliver(scalegen.Record(h, -1), hostAddr(h)); err != nil {
			tb.Fatal(err)
		}
	}
	a.publishState()
	snap := a.state.Load()
	if got, want := len(snap.Workloads()), n+2; got != want {
		tb.Fatalf("the snapshot holds %d workloads, want %d", got, want)
	}
	if got, want := len(snap.Services()), n/scalegen.HostsPerSvc+1; got != want {
		tb.Fatalf("the snapshot holds %d services, want %d (conflicts: %v)", got, want, snap.ServiceConflicts())
	}
	return a
}

func hostAddr(h int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{172, 16, byte(h >> 8), byte(h)}), 7946)
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScaleGossipUpdate: one host's record changes (a workload's health flips; 64 hosts take turns) and the
// agent takes it in: discovery receives and checks it, the mesh state is built and published, conflicts are
// reported. cpu-ms/op is the process's CPU time per change (concurrent GC included).
func BenchmarkScaleGossipUpdate(b *testing.B) {
	for _, n := range scaleSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			a := scaleApp(b, n)
			var version uint64 = 1 << 62
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			for i := 0; b.Loop(); i++ {
				h := i % 64
				unhealthy := -1 // every workload healthy, then the first not, in turns
				if i/64%2 == 1 {
					unhealthy = 0
				}
				r := scalegen.Record(h, unhealthy)
				version++
				r.Version = version
				if err := a.gossip.Deliver(r, hostAddr(h)); err != nil {
					b.Fatal(err)
				}
				a.publishState()
			}
			b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
}

// BenchmarkScaleMemory reports the heap the agent holds per remote workload (discovery's table and view, the
// snapshot), measured as live heap after the mesh is loaded against before.
func BenchmarkScaleMemory(b *testing.B) {
	for _, n := range scaleSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			before := liveHeap()
			a := scaleApp(b, n)
			after := liveHeap()
			runtime.KeepAlive(a)
			for b.Loop() {
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(after-before)/float64(n), "B/workload")
		})
	}
}

func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
