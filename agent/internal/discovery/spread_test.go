//go:build scaleharness

package discovery

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// BenchmarkScalePoolSpread: how long one member's change takes to reach the others (make bench-scale,
// docs/scale.md "The pool size we support"). Two changes: a record that fits one broadcast, and one of 50
// workloads with a service each that travels as two fragments.
//
//   - Measured at 50, 100 and 200 members: pools of real members (memberlist and discovery) in this process, on
//     loopback, with production timings. Each change's receipt time at every other member is taken when its
//     table changes.
//   - Modelled at every size (spreadModel): memberlist's dissemination as it is configured, simulated. At 50 to
//     200 members it is read against the measurement; at 1,000 and 5,000, which this 2-core machine cannot hold
//     in one process, it is the estimate.
//
// Metrics, in seconds from the change: p50 is the median member's receipt, all the last member's, each averaged
// over the changes (measured) or the trials (modelled). missed is, per change, how many members the gossip
// did not reach in the model (they get the record from its host after the repair delay); requests, how many
// requests for records the measured pool made during its changes.
func BenchmarkScalePoolSpread(b *testing.B) {
	model := productionModel()
	for _, members := range []int{50, 100, 200, 1000, 5000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			for b.Loop() {
			}
			b.ReportMetric(0, "ns/op")
			rng := rand.New(rand.NewPCG(uint64(members), 7))
			for _, c := range spreadChanges {
				p50, all, missed := model.trials(members, c.pieces, 200, rng)
				b.ReportMetric(p50, "s-p50-"+c.name+"-model")
				b.ReportMetric(all, "s-all-"+c.name+"-model")
				b.ReportMetric(missed, "missed-"+c.name+"-model")
			}
			if members > 200 {
				return
			}
			for name, v := range measureSpread(b, members, 3) {
				b.ReportMetric(v, name)
			}
		})
	}
}

// spreadChanges are the two changes measured: a record that fits a broadcast, and one cut into two fragments.
var spreadChanges = []struct {
	name   string
	pieces int
}{{"small", 1}, {"large", 2}}

// measureSpread starts a pool of members, waits until it converged, then makes rounds rounds of the two changes
// at one member and reports the receipt times as BenchmarkScalePoolSpread's metrics.
func measureSpread(b *testing.B, members, rounds int) map[string]float64 {
	nodes := make([]*testNode, members)
	for i := range nodes {
		cfgs := []nodeConfig{withProductionTiming, withGrace(30 * time.Second)}
		if i > 0 {
			cfgs = append(cfgs, withSeeds(nodes[0], nodes[rand.IntN(i)]))
		}
		nodes[i] = startNode(b, fmt.Sprintf("n%04d", i), testRecord(i, 1), cfgs...)
	}
	defer stopAll(b, nodes)
	waitFor(b, 10*time.Minute, "the pool converges", func() bool {
		for _, n := range nodes {
			if n.d.workloadCount() != members-1 {
				return false
			}
		}
		return true
	})
	time.Sleep(5 * time.Second) // the joins' broadcasts drain
	owner := nodes[members/2]
	out := map[string]float64{}
	before := poolStats(nodes)
	for r := range rounds {
		for _, c := range spreadChanges {
			rec := testRecord(members/2, 2+r)
			if c.pieces > 1 {
				rec = largeRecord(members/2, 50+r)
			}
			times := receiptTimes(b, nodes, owner, rec)
			out["s-p50-"+c.name] += quantile(times, 0.5) / float64(rounds)
			out["s-all-"+c.name] += slices.Max(times) / float64(rounds)
			time.Sleep(3 * time.Second) // the change's broadcasts drain before the next
		}
	}
	// Requests for records while the changes spread: a member the gossip missed asks the record's host.
	out["requests"] = float64(poolStats(nodes).Requested - before.Requested)
	return out
}

// receiptTimes publishes rec at owner and returns how long after it each other member took to use it.
func receiptTimes(b *testing.B, nodes []*testNode, owner *testNode, rec *Record) []float64 {
	times := make([]float64, 0, len(nodes)-1)
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	if err := owner.d.SetLocal(*rec); err != nil {
		b.Fatal(err)
	}
	owner.d.mu.Lock()
	version := owner.d.local.rec.Version
	owner.d.mu.Unlock()
	deadline := time.After(time.Minute)
	for _, n := range nodes {
		if n == owner {
			continue
		}
		wg.Go(func() {
			for !n.holdsVersion(owner.name, version) {
				select {
				case <-n.d.Changed():
				case <-deadline:
					return
				}
			}
			mu.Lock()
			times = append(times, time.Since(start).Seconds())
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(times) != len(nodes)-1 {
		b.Fatalf("%d of %d members got version %d of %s within a minute", len(times), len(nodes)-1, version, owner.name)
	}
	return times
}

// holdsVersion reports whether n uses a record of node of at least version.
func (n *testNode) holdsVersion(node string, version uint64) bool {
	n.d.mu.Lock()
	defer n.d.mu.Unlock()
	p := n.d.table.peers[node]
	return p != nil && p.current != nil && p.current.rec.Version >= version
}

func quantile(xs []float64, q float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	return s[int(math.Round(q*float64(len(s)-1)))]
}

// spreadModel simulates how memberlist, configured as discovery configures it, spreads one change, with the rules
// discovery adds:
//
//   - Every member gossips each interval, at its own phase, to fanout members chosen at random. Each packet carries
//     memberlist's own broadcasts first (here the owner's new metadata: the advertisement), then one of the
//     delegate's (a record, or one fragment: about 1 KB each, one per 1,400-byte packet), the one sent the fewest
//     times, the newest on a tie. A broadcast is sent at most mult × ⌈log10(n+1)⌉ times by each member; a member
//     with nothing left to send skips its turn.
//   - The advertisement is relayed by every member that receives it, as memberlist does.
//   - A whole record received before the advertisement is held, and relayed when the advertisement comes; a
//     fragment received before it is dropped; a fragment is relayed once, when first received after it
//     (fragment.go).
//   - A member uses the record when it has the advertisement and every piece.
//
// Delivery and processing take no time in the model: what the measurement at 50 to 200 members adds to it is the
// cost of a member's turn on this machine.
type spreadModel struct {
	interval time.Duration
	fanout   int
	mult     int
}

// productionModel is the model with memberlist's LAN configuration, which discovery keeps.
func productionModel() spreadModel {
	c := memberlist.DefaultLANConfig()
	return spreadModel{interval: c.GossipInterval, fanout: c.GossipNodes, mult: c.RetransmitMult}
}

// trials simulates the change that many times in a pool of n and returns the mean median receipt time, the mean
// time of the last receipt (of those the gossip reached) and the mean number of members it did not reach.
func (m spreadModel) trials(n, pieces, trials int, rng *rand.Rand) (p50, all, missed float64) {
	for range trials {
		times, miss := m.spread(n, pieces, rng)
		p50 += quantile(times, 0.5)
		all += slices.Max(times)
		missed += float64(miss)
	}
	t := float64(trials)
	return p50 / t, all / t, missed / t
}

// member is one member's state in the model.
type member struct {
	phase     float64 // its gossip turns are at phase + k × interval
	advert    bool
	advertSnt int       // times it sent the advertisement
	pieces    []bool    // the pieces it has
	sent      []int     // per piece, times it sent it (-1: not queued)
	queuedAt  []float64 // per piece, when it was queued (newest first on a tie)
	held      bool      // a whole record waits for the advertisement
	done      float64   // when it used the record; -1 not yet
	scheduled bool
}

// spread simulates one change at member 0 of n and returns the receipt times of the others (seconds) and how
// many it did not reach.
func (m spreadModel) spread(n, pieces int, rng *rand.Rand) ([]float64, int) {
	interval := m.interval.Seconds()
	limit := m.mult * int(math.Ceil(math.Log10(float64(n+1))))
	ms := make([]member, n)
	for i := range ms {
		ms[i] = member{phase: rng.Float64() * interval, pieces: make([]bool, pieces), sent: make([]int, pieces),
			queuedAt: make([]float64, pieces), advertSnt: -1, done: -1}
		for p := range ms[i].sent {
			ms[i].sent[p] = -1
		}
	}
	var turns turnHeap
	schedule := func(i int, now float64) {
		if ms[i].scheduled {
			return
		}
		ms[i].scheduled = true
		k := math.Ceil((now - ms[i].phase) / interval)
		heap.Push(&turns, turn{at: ms[i].phase + max(k, 0)*interval, who: i})
	}
	queue := func(i, p int, now float64) {
		ms[i].sent[p], ms[i].queuedAt[p] = 0, now
		schedule(i, now)
	}
	// The owner has everything and queues it.
	o := &ms[0]
	o.advert, o.advertSnt, o.done = true, 0, 0
	for p := range pieces {
		o.pieces[p] = true
		queue(0, p, 0)
	}
	complete := func(j int, now float64) {
		if ms[j].done < 0 && ms[j].advert && !slices.Contains(ms[j].pieces, false) {
			ms[j].done = now
		}
	}
	deliver := func(j int, advert bool, piece int, now float64) {
		r := &ms[j]
		if advert && !r.advert {
			r.advert, r.advertSnt = true, 0
			schedule(j, now)
			if r.held { // the whole record it held is used and relayed
				r.held = false
				queue(j, 0, now)
			}
		}
		if piece >= 0 && !r.pieces[piece] {
			switch {
			case pieces == 1 && !r.advert:
				r.pieces[piece], r.held = true, true
			case pieces == 1:
				r.pieces[piece] = true
				queue(j, piece, now)
			case r.advert:
				r.pieces[piece] = true
				queue(j, piece, now)
			}
		}
		complete(j, now)
	}
	for turns.Len() > 0 {
		t := heap.Pop(&turns).(turn)
		s := &ms[t.who]
		s.scheduled = false
		sentAny := false
		for _, j := range pickOthers(rng, n, t.who, m.fanout) {
			advert := s.advertSnt >= 0 && s.advertSnt < limit
			if advert {
				s.advertSnt++
			}
			piece := -1
			for p := range pieces {
				if s.sent[p] < 0 || s.sent[p] >= limit {
					continue
				}
				if piece < 0 || s.sent[p] < s.sent[piece] || s.sent[p] == s.sent[piece] && s.queuedAt[p] > s.queuedAt[piece] {
					piece = p
				}
			}
			if piece >= 0 {
				s.sent[piece]++
			}
			if !advert && piece < 0 {
				break
			}
			sentAny = true
			deliver(j, advert, piece, t.at)
		}
		if sentAny { // its next turn
			s.scheduled = true
			heap.Push(&turns, turn{at: t.at + interval, who: t.who})
		}
	}
	times := make([]float64, 0, n-1)
	missed := 0
	for i := 1; i < n; i++ {
		if ms[i].done < 0 {
			missed++
			continue
		}
		times = append(times, ms[i].done)
	}
	return times, missed
}

// pickOthers chooses k distinct members of n other than self.
func pickOthers(rng *rand.Rand, n, self, k int) []int {
	out := make([]int, 0, k)
	for len(out) < min(k, n-1) {
		j := rng.IntN(n)
		if j != self && !slices.Contains(out, j) {
			out = append(out, j)
		}
	}
	return out
}

type turn struct {
	at  float64
	who int
}

type turnHeap []turn

func (h turnHeap) Len() int           { return len(h) }
func (h turnHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h turnHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *turnHeap) Push(x any)        { *h = append(*h, x.(turn)) }
func (h *turnHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}
