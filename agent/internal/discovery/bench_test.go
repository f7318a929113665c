package discovery

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

var (
	restWindow = flag.Duration("gossip.rest", 0,
		"how long BenchmarkConvergence measures the traffic at rest (default: one push/pull period, 60s to 120s)")
	compression = flag.Bool("gossip.compression", false,
		"turn memberlist's packet compression on in BenchmarkConvergence (discovery turns it off), to compare")
)

// BenchmarkConvergence starts a pool of in-process members on loopback with production timings (memberlist's LAN
// defaults, discovery's defaults) and reports:
//
//	s/converge   from the first member starting to every member holding every other member's record
//	s/update     from one member publishing a new workload to every other member seeing it
//	B/node/s     bytes each member sends per second at rest (encrypted payload, no IP/UDP/TCP headers),
//	             over a window of one push/pull period, split into packets (probes) and streams (push/pull)
//	incomplete-nodes  members missing a record at the end (should be 0; an overloaded machine makes false
//	             failure detections that outlast the grace period)
//
// Run it with: go test ./agent/internal/discovery -run '^$' -bench Convergence -benchtime 1x
func BenchmarkConvergence(b *testing.B) {
	for _, members := range []int{50, 100, 200} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			var converge, update, rest, packets, streams, incomplete float64
			for range b.N {
				r := runPool(b, members)
				converge += r.converge.Seconds()
				update += r.update.Seconds()
				rest += r.bytesPerNodeSec
				packets += r.packetsPerNodeSec
				streams += r.streamsPerNodeSec
				incomplete += float64(r.incomplete)
			}
			n := float64(b.N)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(converge/n, "s/converge")
			b.ReportMetric(update/n, "s/update")
			b.ReportMetric(rest/n, "B/node/s")
			b.ReportMetric(packets/n, "B/node/s-packets")
			b.ReportMetric(streams/n, "B/node/s-streams")
			b.ReportMetric(incomplete/n, "incomplete-nodes")
		})
	}
}

type poolResult struct {
	converge, update                                      time.Duration
	bytesPerNodeSec, packetsPerNodeSec, streamsPerNodeSec float64
	incomplete                                            int
}

func runPool(b *testing.B, members int) poolResult {
	var r poolResult
	start := time.Now()
	nodes := make([]*testNode, members)
	for i := range nodes {
		cfgs := []nodeConfig{withProductionTiming, withGrace(30 * time.Second)}
		if *compression {
			cfgs = append(cfgs, func(n *testNode, o *Options) {
				o.Tuning.Memberlist = func(c *memberlist.Config) { c.EnableCompression = true; n.wrap(c) }
			})
		}
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
	before := poolStats(nodes)
	time.Sleep(window)
	var p1, s1 int64
	for _, n := range nodes {
		p1 += n.tr.packetBytes.Load()
		s1 += n.tr.streamBytes.Load()
	}
	after := poolStats(nodes)
	b.Logf("%d members at rest for %s: discovery accepted %d records, relayed %d, sent %d requests, answered %d",
		members, window, after.Accepted-before.Accepted, after.Relayed-before.Relayed,
		after.Requested-before.Requested, after.Replied-before.Replied)
	per := float64(members) * window.Seconds()
	r.packetsPerNodeSec = float64(p1-p0) / per
	r.streamsPerNodeSec = float64(s1-s0) / per
	r.bytesPerNodeSec = r.packetsPerNodeSec + r.streamsPerNodeSec
	// Members that lack a record after the rest period (a false failure detection outlasting the grace period on
	// an overloaded machine) are counted, not failed: the benchmark reports, the tests assert.
	for _, n := range nodes {
		want := 2*(members-1) + 1
		if n == changed {
			want--
		}
		if got := n.d.workloadCount(); got != want {
			r.incomplete++
			b.Logf("%s has %d workloads after the rest period, want %d", n.name, got, want)
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

// poolStats sums the counters of every member.
func poolStats(nodes []*testNode) Stats {
	var sum Stats
	for _, n := range nodes {
		s := n.d.Stats()
		sum.Accepted += s.Accepted
		sum.Relayed += s.Relayed
		sum.Requested += s.Requested
		sum.Replied += s.Replied
	}
	return sum
}
