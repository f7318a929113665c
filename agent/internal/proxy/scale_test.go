//go:build scaleharness

package proxy

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/ambient-agent/ambient-agent/agent/internal/scalegen"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// The scale harness's per-connection lookups (make bench-scale, docs/scale.md) in a mesh of n workloads.

func scaleSnapshot(b *testing.B, n int) (*state.Snapshot, *state.Workload) {
	b.Helper()
	web := &state.Workload{UID: "local/default/web", Name: "web", Namespace: "default", ServiceAccount: "web",
		TrustDomain: "cluster.local", Addresses: []netip.Addr{netip.MustParseAddr("192.168.77.1")}, Tunnel: state.TunnelHBONE,
		Healthy: true, Capacity: 1, Local: true, Origin: state.OriginConfig, Node: "local"}
	local := state.Input{Workloads: []*state.Workload{web},
		Services: []state.ServiceDecl{{Node: "local", Local: true, Name: "web", Namespace: "default",
			Hostname: "web.default.svc.cluster.local", Ports: []state.ServicePort{{Port: 80, TargetPort: 80}},
			Workloads: []string{web.UID}, Origin: state.OriginConfig}}}
	in := scalegen.Input(n, local)
	in.Limits.Domains = []string{scalegen.Domain, "svc.cluster.local"}
	snap := state.Build(1, in)
	if len(snap.Workloads()) != n+1 || len(snap.Services()) != n/scalegen.HostsPerSvc+1 {
		b.Fatalf("snapshot of %d workloads and %d services, want %d and %d", len(snap.Workloads()), len(snap.Services()),
			n+1, n/scalegen.HostsPerSvc+1)
	}
	w, _ := snap.WorkloadByUID(web.UID)
	return snap, w
}

var scaleSizes = []int{1000, 10000, 50000}

// BenchmarkScaleSourceFallback: the source of an outbound connection from an address no local workload has
// (the host's own): the default local workload.
func BenchmarkScaleSourceFallback(b *testing.B) {
	for _, n := range scaleSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			snap, web := scaleSnapshot(b, n)
			src := netip.MustParseAddr("192.168.77.200")
			b.ReportAllocs()
			for b.Loop() {
				if defaultSource(snap, src, nil) != web {
					b.Fatal("not the local workload")
				}
			}
		})
	}
}

// BenchmarkScaleHairpinCheck: the waypoints of the services a local workload backs, looked up for every HBONE
// tunnel to it under hairpin enforcement.
func BenchmarkScaleHairpinCheck(b *testing.B) {
	for _, n := range scaleSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			snap, web := scaleSnapshot(b, n)
			b.ReportAllocs()
			for b.Loop() {
				_ = serviceWaypoints(snap, web)
			}
		})
	}
}

// BenchmarkScaleRoute: the outbound decision for a connection to a random service's VIP.
func BenchmarkScaleRoute(b *testing.B) {
	for _, n := range scaleSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			snap, web := scaleSnapshot(b, n)
			svcs := snap.Services()
			src := netip.AddrPortFrom(web.Addresses[0], 40000)
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				i = (i*7919 + 1) % len(svcs)
				if len(svcs[i].Addresses) == 0 {
					continue
				}
				dst := netip.AddrPortFrom(svcs[i].Addresses[0], 80)
				if r := decideOutbound(snap, web, src, dst, func(int) int { return 0 }); r.Kind == RouteDrop {
					b.Fatalf("dropped: %s", r.Reason)
				}
			}
		})
	}
}
