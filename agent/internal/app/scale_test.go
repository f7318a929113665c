//go:build scaleharness

package app

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/proxy"
	"github.com/ambient-agent/ambient-agent/agent/internal/scalegen"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
	"github.com/ambient-agent/ambient-agent/agent/internal/xds"
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

// BenchmarkScaleGossipUpdate: one host's record changes (a workload's health flips, at every change; 64 hosts take turns) and the
// agent takes it in as it does on gossip's Changed: discovery receives and checks it, the mesh snapshot is
// patched (or built) and published. cpu-ms/op is the process's CPU time per change (concurrent GC included).
func BenchmarkScaleGossipUpdate(b *testing.B) {
	benchGossipChanges(b, func(i, h int) discovery.Record {
		unhealthy := 0 // the first workload unhealthy, then healthy again, in turns: every change is one
		if i/64%2 == 1 {
			unhealthy = -1
		}
		return scalegen.Record(h, unhealthy)
	})
}

// BenchmarkScaleGossipStructural: one host's record changes what contests read (a workload moves to a new
// address and back, in turns): the snapshot is built from everything.
func BenchmarkScaleGossipStructural(b *testing.B) {
	benchGossipChanges(b, func(i, h int) discovery.Record {
		r := scalegen.Record(h, -1)
		if i/64%2 == 0 { // moved, then back, in turns: every change is one
			w := *r.Workloads[0]
			w.Addresses = []netip.Addr{netip.AddrFrom4([4]byte{11, byte(h >> 8), byte(h), 1})}
			r.Workloads[0] = &w
		}
		return r
	})
}

func benchGossipChanges(b *testing.B, record func(i, h int) discovery.Record) {
	for _, n := range scaleSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			a := scaleApp(b, n)
			var version uint64 = 1 << 62
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			for i := 0; b.Loop(); i++ {
				h := i % 64
				r := record(i, h)
				version++
				r.Version = version
				if err := a.gossip.Deliver(r, hostAddr(h)); err != nil {
					b.Fatal(err)
				}
				a.publishGossip()
			}
			b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/1000/float64(b.N), "cpu-ms/op")
			w, ok := a.state.Load().WorkloadByUID(scalegen.HostName(0) + "/" + scalegen.Record(0, -1).Workloads[0].Namespace + "/" + scalegen.Record(0, -1).Workloads[0].Name)
			if !ok {
				b.Fatal("host 0's first workload is not in the snapshot")
			}
			if want := record(b.N-1-(b.N-1)%64, 0).Workloads[0]; b.N > 0 && (w.Healthy != want.Healthy || w.Addresses[0] != want.Addresses[0]) {
				b.Fatalf("host 0's first workload in the snapshot: healthy %v at %v; its last record says %v at %v",
					w.Healthy, w.Addresses[0], want.Healthy, want.Addresses[0])
			}
		})
	}
}

// istiodApp is an agent that knows the cluster of n workloads from istiod (xds's harness), not yet applied.
func istiodApp(tb testing.TB, n int) (*App, *xds.Client) {
	tb.Helper()
	cfg := testConfig(tb, "[node]\nname = \"local\"\n[[workload]]\nname = \"web\"\naddresses = [\"192.168.77.1\"]\n")
	a := &App{log: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: telemetry.NewMetrics(prometheus.NewRegistry(), "scale"),
		ready: newReadiness(), live: proxy.NewLive(), policies: policy.NewStore(nil)}
	a.cfg.Store(cfg)
	a.state = state.NewStore(a.localInput(cfg))
	c, err := xds.New(xds.Options{Address: "127.0.0.1:15012", NodeName: "local", Namespace: "default"})
	if err != nil {
		tb.Fatal(err)
	}
	a.istiod = c
	if err := c.Apply(xds.HarnessMesh(n, -1)); err != nil {
		tb.Fatal(err)
	}
	return a, c
}

// TestScaleIstiodPatchesReadAsBuilds: istiod's deltas of workloads' health are taken as patches (a removal and
// the workload's return are built), and the snapshot in use is always the one built from everything.
func TestScaleIstiodPatchesReadAsBuilds(t *testing.T) {
	a, c := istiodApp(t, 1000)
	var last istiodApplied
	a.applyIstiod(&last)
	rng := rand.New(rand.NewPCG(5, 6))
	patched, removed := 0, -1
	for i := range 200 {
		var delta []byte
		switch {
		case removed >= 0:
			delta, removed = xds.HarnessWorkloadDelta(removed, true), -1
		case rng.IntN(10) == 0:
			removed = rng.IntN(1000)
			delta = xds.HarnessRemoval(removed)
		default:
			delta = xds.HarnessWorkloadDelta(rng.IntN(1000), rng.IntN(2) == 0)
		}
		if err := c.Apply(delta); err != nil {
			t.Fatal(err)
		}
		if u := a.istiod.Current(); u.PolicyGeneration != last.policyGen {
			t.Fatal("the policy generation moved for a delta of addresses")
		}
		if publishReadsAsBuild(t, a, a.publishIstiod, fmt.Sprintf("delta %d", i)) {
			patched++
		}
	}
	if patched < 140 {
		t.Errorf("%d of 200 deltas were patches; about 160 are of health only", patched)
	}
	t.Logf("%d of 200 istiod deltas patched, the others built", patched)
}

// BenchmarkScaleIstiodDelta: istiod sends one workload's new health (64 workloads take turns) and the agent takes
// it in as it does from its stream: decoded, applied, its view built, the snapshot built, policies as needed.
func BenchmarkScaleIstiodDelta(b *testing.B) {
	for _, n := range scaleSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			a, c := istiodApp(b, n)
			var last istiodApplied
			a.applyIstiod(&last)
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			for i := 0; b.Loop(); i++ {
				if err := c.Apply(xds.HarnessWorkloadDelta(i%64, i/64%2 == 1)); err != nil { // a flip every time
					b.Fatal(err)
				}
				a.applyIstiod(&last)
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

// TestScalePatchesReadAsBuilds: an agent that takes gossip changes as patches (and builds when they are not only
// of attributes) holds the snapshot it would have built from everything, change after change.
func TestScalePatchesReadAsBuilds(t *testing.T) {
	a := scaleApp(t, 1000)
	var version uint64 = 1 << 62
	rng := rand.New(rand.NewPCG(3, 4))
	patched := 0
	for i := range 200 {
		h := rng.IntN(scalegen.Hosts(1000))
		r := scalegen.Record(h, rng.IntN(scalegen.PerHost+1)-1)
		r.Workloads[1].Labels = map[string]string{"round": strconv.Itoa(i)}
		if rng.IntN(10) == 0 { // now and then a change no patch takes
			w := *r.Workloads[2]
			w.Addresses = []netip.Addr{netip.AddrFrom4([4]byte{11, byte(h >> 8), byte(h), byte(i)})}
			r.Workloads[2] = &w
		}
		version++
		r.Version = version
		if err := a.gossip.Deliver(r, hostAddr(h)); err != nil {
			t.Fatal(err)
		}
		if publishReadsAsBuild(t, a, a.publishGossip, fmt.Sprintf("change %d (host %d)", i, h)) {
			patched++
		}
	}
	if patched < 150 {
		t.Errorf("%d of 200 changes were patches; about 180 take no contest", patched)
	}
	t.Logf("%d of 200 changes patched, the others built", patched)
}

// publishReadsAsBuild runs publish and checks that it published the next version, one that reads exactly as the
// snapshot built from everything would; it reports whether publish patched.
func publishReadsAsBuild(t *testing.T, a *App, publish func() bool, what string) bool {
	t.Helper()
	before := a.state.Load().Version()
	patched := publish()
	got := a.state.Load()
	if got.Version() != before+1 {
		t.Fatalf("%s published version %d after %d", what, got.Version(), before)
	}
	built := state.Build(got.Version(), a.stateInput(got))
	if snapshotText(t, got) != snapshotText(t, built) {
		t.Fatalf("%s: the snapshot in use differs from the one built from everything", what)
	}
	return patched
}

// snapshotText is what the snapshot's readers see of every workload and service.
func snapshotText(t *testing.T, s *state.Snapshot) string {
	t.Helper()
	var b strings.Builder
	enc := json.NewEncoder(&b)
	for _, w := range s.Workloads() {
		_ = enc.Encode(w)
		if o, ok := s.WorkloadByAddr(w.Addresses[0]); ok {
			_ = enc.Encode(o)
		}
	}
	for _, svc := range s.Services() {
		_ = enc.Encode(svc)
		for _, e := range svc.Endpoints {
			_ = enc.Encode(e.Workload)
		}
		if o, ok := s.ServiceByHostname(svc.Hostname); ok {
			for _, e := range o.Endpoints {
				_ = enc.Encode(e.Workload)
			}
		}
	}
	_ = enc.Encode(s.Conflicts())
	_ = enc.Encode(s.ServiceConflicts())
	return b.String()
}
