package discovery

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

var restWindow = flag.Duration("gossip.rest", 0,
	"how long BenchmarkConvergence measures the traffic at rest (default: one push/pull period, 60s to 120s)")

// BenchmarkConvergence starts a pool of in-process members on loopback with production timings (memberlist's LAN
// defaults, discovery's defaults) and reports:
//
//	s/converge   from the first member starting to every member holding every other member's record
//	s/update     from one member publishing a new workload to every other member seeing it
//	B/node/s     bytes each member sends per second at rest (encrypted payload, no IP/UDP/TCP headers),
//	             over a window of one push/pull period, split into packets (probes) and streams (push/pull)
//
// Run it with: go test ./agent/internal/discovery -run '^$' -bench Convergence -benchtime 1x
func BenchmarkConvergence(b *testing.B) {
	for _, members := range []int{50, 100, 200} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			var converge, update, rest, packets, streams float64
			for range b.N {
				r := runPool(b, members)
				converge += r.converge.Seconds()
				update += r.update.Seconds()
				rest += r.bytesPerNodeSec
				packets += r.packetsPerNodeSec
				streams += r.streamsPerNodeSec
			}
			n := float64(b.N)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(converge/n, "s/converge")
			b.ReportMetric(update/n, "s/update")
			b.ReportMetric(rest/n, "B/node/s")
			b.ReportMetric(packets/n, "B/node/s-packets")
			b.ReportMetric(streams/n, "B/node/s-streams")
		})
	}
}

type poolResult struct {
	converge, update                                      time.Duration
	bytesPerNodeSec, packetsPerNodeSec, streamsPerNodeSec float64
}

func runPool(b *testing.B, members int) poolResult {
	var r poolResult
	start := time.Now()
	nodes := make([]*testNode, members)
	for i := range nodes {
		cfgs := []nodeConfig{withProductionTiming, withGrace(30 * time.Second)}
		if i > 0 {
			cfgs = append(cfgs, withSeeds(nodes[0], nodes[rand.IntN(i)]))
		}
		nodes[i] = startNode(b, fmt.Sprintf("n%03d", i), testRecord(i, 2), cfgs...)
	}
	defer stopAll(b, nodes)
	complete := func(count int) func() bool {
		return func() bool {
			for _, n := range nodes {
				if n.d.workloadCount() != count {
					return false
				}
			}
			return true
		}
	}
	waitFor(b, 10*time.Minute, "the pool converges", complete(2*(members-1)))
	r.converge = time.Since(start)

	changed := nodes[members/2]
	published := time.Now()
	if err := changed.d.SetLocal(*testRecord(members/2, 3)); err != nil {
		b.Fatal(err)
	}
	uid := changed.name + "/default/w2"
	waitFor(b, 5*time.Minute, "the update reaches everyone", func() bool {
		for _, n := range nodes {
			if n != changed && !n.hasWorkload(uid) {
				return false
			}
		}
		return true
	})
	r.update = time.Since(published)

	// At rest: let the broadcast queues drain, then count one push/pull period.
	time.Sleep(5 * time.Second)
	window := *restWindow
	if window == 0 {
		window = pushPullPeriod(30*time.Second, members)
	}
	var p0, s0 int64
	for _, n := range nodes {
		p0 += n.tr.packetBytes.Load()
		s0 += n.tr.streamBytes.Load()
	}
	time.Sleep(window)
	var p1, s1 int64
	for _, n := range nodes {
		p1 += n.tr.packetBytes.Load()
		s1 += n.tr.streamBytes.Load()
	}
	per := float64(members) * window.Seconds()
	r.packetsPerNodeSec = float64(p1-p0) / per
	r.streamsPerNodeSec = float64(s1-s0) / per
	r.bytesPerNodeSec = r.packetsPerNodeSec + r.streamsPerNodeSec
	for _, n := range nodes {
		want := 2*(members-1) + 1
		if n == changed {
			want--
		}
		if got := len(n.d.Workloads()); got != want {
			b.Errorf("%s has %d workloads after the rest period, want %d", n.name, got, want)
		}
	}
	return r
}

// pushPullPeriod is memberlist's push/pull interval at a pool size: scaled up above 32 members.
func pushPullPeriod(interval time.Duration, n int) time.Duration {
	if n <= 32 {
		return interval
	}
	return time.Duration(math.Ceil(math.Log2(float64(n))-5)+1) * interval
}
