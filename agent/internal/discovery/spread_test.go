//go:build scaleharness

package discovery

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
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
	sizes := messageSizes(b)
	for _, members := range []int{50, 100, 200, 1000, 5000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			for b.Loop() {
			}
			b.ReportMetric(0, "ns/op")
			rng := rand.New(rand.NewPCG(uint64(members), 7))
			for _, c := range spreadChanges {
				p50, all, missed := model.trials(members, sizes[c], 200, rng)
				b.ReportMetric(p50, "s-p50-"+c+"-model")
				b.ReportMetric(all, "s-all-"+c+"-model")
				b.ReportMetric(missed, "missed-"+c+"-model")
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

// spreadChanges are the two changes measured: a record that fits a broadcast (small), and one cut into two
// fragments (large).
var spreadChanges = []string{"small", "large"}

// spreadRecord is the record of a change of member id, in round r: small, a record in one broadcast; large, 50
// workloads with a service each, in two fragments; host, 10 workloads with a service each (a host of the scale
// harness's mesh), in one fragment.
func spreadRecord(change string, id, r int) *Record {
	switch change {
	case "large":
		return largeRecord(id, 50+r)
	case "host":
		rec := largeRecord(id, 10)
		rec.Workloads[0].Labels["round"] = strconv.Itoa(r)
		return rec
	}
	return testRecord(id, 2+r)
}

// messageSizes are the sizes of the broadcasts each change is sent in, as this code encodes them: the model's.
func messageSizes(b *testing.B) map[string][]int {
	n := startNode(b, "n0100", testRecord(100, 1))
	defer n.stop(b)
	out := map[string][]int{}
	for _, c := range append(slices.Clone(spreadChanges), "host") {
		if err := n.d.SetLocal(*spreadRecord(c, 100, 0)); err != nil {
			b.Fatal(err)
		}
		n.d.mu.Lock()
		raw, version := n.d.local.raw, n.d.local.rec.Version
		n.d.mu.Unlock()
		pieces := cut(n.name, version, raw)
		if pieces == nil {
			pieces = [][]byte{encodeMessage(kindBroadcast, raw)}
		}
		for _, p := range pieces {
			out[c] = append(out[c], len(p))
		}
	}
	if len(out["small"]) != 1 || len(out["large"]) != 2 || len(out["host"]) != 1 || out["host"][0] == out["small"][0] {
		b.Fatalf("the changes are sent in %v, the benchmark wants 1 whole record, 2 fragments and 1 fragment", out)
	}
	return out
}

// measureSpread starts a pool of members, waits until it converged, then makes rounds rounds of the two changes
// at one member and reports the receipt times as BenchmarkScalePoolSpread's metrics.
func measureSpread(b *testing.B, members, rounds int) map[string]float64 {
	nodes := startPool(b, members)
	defer stopAll(b, nodes)
	owner := nodes[members/2]
	out := map[string]float64{}
	before := poolStats(nodes)
	for r := range rounds {
		for _, c := range spreadChanges {
			times := receiptTimes(b, nodes, owner, spreadRecord(c, members/2, r))
			out["s-p50-"+c] += quantile(times, 0.5) / float64(rounds)
			out["s-all-"+c] += slices.Max(times) / float64(rounds)
			time.Sleep(3 * time.Second) // the change's broadcasts drain before the next
		}
	}
	// Requests for records while the changes spread: a member the gossip missed asks the record's host.
	out["requests"] = float64(poolStats(nodes).Requested - before.Requested)
	return out
}

// startPool starts members with production timings, each with a record of one workload, and returns once every
// member uses every other's record and the joins' broadcasts drained.
func startPool(b *testing.B, members int) []*testNode {
	nodes := make([]*testNode, members)
	for i := range nodes {
		cfgs := []nodeConfig{withProductionTiming, withGrace(30 * time.Second)}
		if i > 0 {
			cfgs = append(cfgs, withSeeds(nodes[0], nodes[rand.IntN(i)]))
		}
		nodes[i] = startNode(b, fmt.Sprintf("n%04d", i), testRecord(i, 1), cfgs...)
	}
	waitFor(b, 10*time.Minute, "the pool converges", func() bool {
		for _, n := range nodes {
			if n.d.workloadCount() != members-1 {
				return false
			}
		}
		return true
	})
	time.Sleep(5 * time.Second)
	return nodes
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

// BenchmarkScalePoolChurn: how many record changes a second a pool carries by gossip. Every member sends at most
// fanout packets each gossip interval, so many changes at once compete for room: past a rate, a change's
// broadcasts reach fewer members before newer ones take their place, and the others ask its host for it after
// the repair delay (6 s for a record in fragments). Changes are of hosts of the scale harness's mesh (10
// workloads with a service each: one fragment), from distinct members, at even intervals.
//
//   - Modelled (spreadModel) at 200, 1,000 and 5,000 members.
//   - Measured at 200 members: pools of real members in this process, as BenchmarkScalePoolSpread's.
//
// Metrics: pulled, the share of (change, member) pairs that the gossip did not deliver within the repair delay
// (modelled: the member would ask the host; measured: requests for records over the changes' count × members);
// s-p50 and s-p99, when members used a change (modelled, of those the gossip delivered).
func BenchmarkScalePoolChurn(b *testing.B) {
	model := productionModel()
	sizes := messageSizes(b)["host"]
	for _, members := range []int{200, 1000, 5000} {
		for _, rate := range []int{1, 2, 5, 10, 20} {
			b.Run(fmt.Sprintf("members=%d/per_s=%d", members, rate), func(b *testing.B) {
				for b.Loop() {
				}
				b.ReportMetric(0, "ns/op")
				seeds := 3 // near its capacity a pool's outcome varies from run to run
				if members > 1000 {
					seeds = 1
				}
				var pulled, p50, p99 float64
				for seed := range seeds {
					x, y, z := model.churn(members, rate, sizes, rand.New(rand.NewPCG(uint64(members), uint64(rate*10+seed))))
					pulled, p50, p99 = pulled+x/float64(seeds), p50+y/float64(seeds), p99+z/float64(seeds)
				}
				b.ReportMetric(pulled, "pulled-model")
				b.ReportMetric(p50, "s-p50-model")
				b.ReportMetric(p99, "s-p99-model")
				if members == 200 && rate >= 2 && rate <= 10 {
					b.ReportMetric(measureChurn(b, members, rate, int(churnSeconds(members, rate)*float64(rate))), "pulled")
				}
			})
		}
	}
}

// BenchmarkScalePoolChurnSettings is BenchmarkScalePoolChurn's model at 1,000 members with memberlist's gossip
// made faster (a shorter interval) or wider (more members each turn): what each does to the rate of changes a
// pool carries. Model only; not part of make bench-scale.
func BenchmarkScalePoolChurnSettings(b *testing.B) {
	sizes := messageSizes(b)["host"]
	for _, set := range []struct {
		interval time.Duration
		fanout   int
	}{{200 * time.Millisecond, 3}, {100 * time.Millisecond, 3}, {200 * time.Millisecond, 6}, {100 * time.Millisecond, 6}} {
		model := productionModel()
		model.interval, model.fanout = set.interval, set.fanout
		for _, rate := range []int{5, 10, 20} {
			b.Run(fmt.Sprintf("interval=%s/fanout=%d/per_s=%d", set.interval, set.fanout, rate), func(b *testing.B) {
				for b.Loop() {
				}
				b.ReportMetric(0, "ns/op")
				pulled, p50, p99 := model.churn(1000, rate, sizes, rand.New(rand.NewPCG(1000, uint64(rate))))
				b.ReportMetric(pulled, "pulled-model")
				b.ReportMetric(p50, "s-p50-model")
				b.ReportMetric(p99, "s-p99-model")
			})
		}
	}
}

// churnSeconds is how long changes are made: 20 s, or less when the pool has fewer members than changes (each
// change is of another member).
func churnSeconds(members, rate int) float64 { return min(20, float64(members)/float64(rate)) }

// churn simulates changes of records of these piece sizes at rate a second, each of another of n members, and
// returns churnOutcome's figures.
func (m spreadModel) churn(n, rate int, sizes []int, rng *rand.Rand) (pulled, p50, p99 float64) {
	changes := make([]published, int(churnSeconds(n, rate)*float64(rate)))
	owners := rng.Perm(n)
	for i := range changes {
		changes[i] = published{at: float64(i) / float64(rate), owner: owners[i], pieces: sizes}
	}
	return churnOutcome(m.simulate(n, changes, rng), changes, fragmentWait)
}

// fragmentWait is how long a member waits for a record that travels in fragments before it asks for it: three
// repair delays (table.wanted).
const fragmentWait = 3 * 2.0

// churnOutcome reads what the model gave: the share of (change, member) pairs not delivered within wait seconds
// of the change (the advertisement comes with its first piece, so this is about when the member would ask), and
// the median and 99th percentile of the delivered ones' times.
func churnOutcome(times [][]float64, changes []published, wait float64) (pulled, p50, p99 float64) {
	var got []float64
	late := 0
	for c, ts := range times {
		for j, t := range ts {
			switch {
			case j == changes[c].owner:
			case t < 0 || t > wait:
				late++
			default:
				got = append(got, t)
			}
		}
	}
	pulled = float64(late) / float64(late+len(got))
	if len(got) == 0 {
		return pulled, math.NaN(), math.NaN()
	}
	return pulled, quantile(got, 0.5), quantile(got, 0.99)
}

// measureChurn starts a pool of members, waits until it converged, then has count distinct members change their
// record, rate a second, waits until every member uses every change, and returns the requests for records
// made meanwhile over count × (members − 1).
func measureChurn(b *testing.B, members, rate, count int) float64 {
	nodes := startPool(b, members)
	defer stopAll(b, nodes)
	before := poolStats(nodes)
	owners := rand.Perm(members)[:count]
	versions := make([]uint64, count)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i, o := range owners {
		<-tick.C
		if err := nodes[o].d.SetLocal(*spreadRecord("host", o, 1)); err != nil {
			b.Fatal(err)
		}
		nodes[o].d.mu.Lock()
		versions[i] = nodes[o].d.local.rec.Version
		nodes[o].d.mu.Unlock()
	}
	waitFor(b, 2*time.Minute, "every member uses every change", func() bool {
		for _, n := range nodes {
			for i, o := range owners {
				if n != nodes[o] && !n.holdsVersion(nodes[o].name, versions[i]) {
					return false
				}
			}
		}
		return true
	})
	return float64(poolStats(nodes).Requested-before.Requested) / float64(count*(members-1))
}

// spreadModel simulates how memberlist, configured as discovery configures it, spreads records, with the rules
// discovery adds:
//
//   - Every member gossips each interval, at its own phase, to fanout members chosen at random, one packet each
//     of at most budget bytes. A packet carries memberlist's own broadcasts first (here the owners' new
//     metadata: their advertisements), then as many of the delegate's (whole records, or fragments) as fit, as
//     memberlist's queues choose them: the fewest times sent first, then the largest, then the newest. Each
//     member sends a broadcast at most mult × ⌈log10(n+1)⌉ times; a member with nothing to send skips its turn.
//   - An advertisement is relayed by every member that receives it, as memberlist does.
//   - A whole record received before its advertisement is held, and relayed when the advertisement comes; a
//     fragment received before it is dropped; a fragment is relayed once, when first received after it
//     (fragment.go).
//   - A member uses a record when it has the advertisement and every piece.
//
// Delivery and processing take no time in the model: what the measurement adds to it is the cost of a member's
// turn on this machine. Left out: memberlist also piggybacks broadcasts on its probes (about two packets a second a
// member, against fifteen of gossip), so the model carries somewhat fewer changes than a pool does.
type spreadModel struct {
	interval time.Duration
	fanout   int
	mult     int
	budget   int // bytes of broadcasts a packet carries, after memberlist's framing and encryption
}

// Framing of memberlist's compound packets (memberlist net.go, state.go): per packet a header and the
// encryption's, per message its length, and per user message its type byte.
const (
	compoundHeader  = 2
	compoundPerMsg  = 2
	userMsgOverhead = 1
	encryptOverhead = 29
	labelOverhead   = 2 + len(gossipLabel) // memberlist's label header (discovery labels its packets)
	// advertBytes is about the size of memberlist's alive message that carries a node's new metadata.
	advertBytes = 130
)

// productionModel is the model with memberlist's LAN configuration, which discovery keeps.
func productionModel() spreadModel {
	c := memberlist.DefaultLANConfig()
	return spreadModel{interval: c.GossipInterval, fanout: c.GossipNodes, mult: c.RetransmitMult,
		budget: c.UDPBufferSize - compoundHeader - encryptOverhead - labelOverhead}
}

// published is one record published in the model: at time at, by member owner, in pieces of these sizes (one
// piece: a whole record).
type published struct {
	at     float64
	owner  int
	pieces []int
}

// trials simulates a single change of these piece sizes that many times in a pool of n and returns the mean
// median receipt time and the mean time of the last receipt (of those the gossip reached, over the trials in which
// it reached anyone; NaN when it reached no one in any), and the mean number of members it did not reach.
func (m spreadModel) trials(n int, pieces []int, trials int, rng *rand.Rand) (p50, all, missed float64) {
	reached := 0.0
	for range trials {
		times := m.simulate(n, []published{{owner: 0, pieces: pieces}}, rng)[0]
		var got []float64
		for i, t := range times {
			switch {
			case i == 0:
			case t < 0:
				missed++
			default:
				got = append(got, t)
			}
		}
		if len(got) == 0 { // the gossip reached nobody: no times to read (NaN when no trial reached anyone)
			continue
		}
		reached++
		p50 += quantile(got, 0.5)
		all += slices.Max(got)
	}
	return p50 / reached, all / reached, missed / float64(trials)
}

// queued is a broadcast in a member's queue.
type queued struct {
	change, piece, size, sent int
	id                        int
	packet                    int // the last packet it went in
}

// simulate runs the changes (of distinct owners) in a pool of n and returns, per change, when each member used
// it (seconds after the change; -1 never: it would ask the owner).
func (m spreadModel) simulate(n int, changes []published, rng *rand.Rand) [][]float64 {
	interval := m.interval.Seconds()
	limit := m.mult * int(math.Ceil(math.Log10(float64(n+1))))
	nc := len(changes)
	advert := make([]bool, n*nc)
	got := make([]uint64, n*nc) // pieces held, a bit each
	held := make([]bool, n*nc)
	done := make([]float64, n*nc)
	for i := range done {
		done[i] = -1
	}
	phase := make([]float64, n)
	for i := range phase {
		phase[i] = rng.Float64() * interval
	}
	mlq, userq := make([][]queued, n), make([][]queued, n)
	scheduled := make([]bool, n)
	var turns turnHeap
	schedule := func(i int, now float64) {
		if !scheduled[i] {
			scheduled[i] = true
			k := math.Ceil((now - phase[i]) / interval)
			heap.Push(&turns, turn{at: phase[i] + max(k, 0)*interval, who: i})
		}
	}
	id := 0
	push := func(q *[]queued, i, c, piece, size int, now float64) {
		id++
		*q = append(*q, queued{change: c, piece: piece, size: size, id: id})
		schedule(i, now)
	}
	complete := func(j, c int, now float64) {
		k := j*nc + c
		if done[k] < 0 && advert[k] && got[k] == 1<<len(changes[c].pieces)-1 {
			done[k] = now - changes[c].at
		}
	}
	deliver := func(j, c, piece int, now float64) { // piece -1: the advertisement
		k := j*nc + c
		whole := len(changes[c].pieces) == 1
		switch {
		case piece < 0 && !advert[k]:
			advert[k] = true
			push(&mlq[j], j, c, -1, advertBytes, now)
			if held[k] { // the whole record it held is used and relayed
				held[k] = false
				push(&userq[j], j, c, 0, changes[c].pieces[0], now)
			}
		case piece < 0 || got[k]&(1<<piece) != 0:
		case whole && !advert[k]:
			got[k], held[k] = 1, true
		case advert[k]:
			got[k] |= 1 << piece
			push(&userq[j], j, c, piece, changes[c].pieces[piece], now)
		}
		complete(j, c, now)
	}
	// fill takes from q what fits in free bytes, as memberlist's queue does, and returns it and the bytes left.
	packets := 0
	fill := func(q *[]queued, free, overhead int, out []queued) ([]queued, int) {
		packets++
		for {
			best := -1
			for i, b := range *q {
				if b.size+overhead > free || b.packet == packets { // each at most once a packet
					continue
				}
				if best < 0 {
					best = i
					continue
				}
				o := (*q)[best]
				if b.sent < o.sent || b.sent == o.sent && (b.size > o.size || b.size == o.size && b.id > o.id) {
					best = i
				}
			}
			if best < 0 {
				return out, free
			}
			b := &(*q)[best]
			b.sent, b.packet = b.sent+1, packets
			free -= b.size + overhead
			out = append(out, *b)
			if b.sent >= limit {
				*q = slices.Delete(*q, best, best+1)
			}
		}
	}
	next := 0 // the next change to publish
	var packet []queued
	for turns.Len() > 0 || next < nc {
		if next < nc && (turns.Len() == 0 || changes[next].at <= turns[0].at) {
			c := changes[next]
			k := c.owner*nc + next
			advert[k], got[k], done[k] = true, 1<<len(c.pieces)-1, 0
			push(&mlq[c.owner], c.owner, next, -1, advertBytes, c.at)
			for p, size := range c.pieces {
				push(&userq[c.owner], c.owner, next, p, size, c.at)
			}
			next++
			continue
		}
		t := heap.Pop(&turns).(turn)
		scheduled[t.who] = false
		sentAny := false
		for _, j := range pickOthers(rng, n, t.who, m.fanout) {
			packet = packet[:0]
			var free int
			packet, free = fill(&mlq[t.who], m.budget, compoundPerMsg, packet)
			packet, _ = fill(&userq[t.who], free, compoundPerMsg+userMsgOverhead, packet)
			if len(packet) == 0 {
				break
			}
			sentAny = true
			for _, b := range packet {
				deliver(j, b.change, b.piece, t.at)
			}
		}
		if sentAny || len(mlq[t.who]) > 0 || len(userq[t.who]) > 0 { // its next turn
			scheduled[t.who] = true
			heap.Push(&turns, turn{at: t.at + interval, who: t.who})
		}
	}
	out := make([][]float64, nc)
	for c := range out {
		out[c] = make([]float64, n)
		for j := range n {
			out[c][j] = done[j*nc+c]
		}
	}
	return out
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

// TestSpreadModel checks the model on what it must show: one change in a pool reaches every member, each member
// sending each broadcast at most its limit, and many changes at once saturate the members' packets.
func TestSpreadModel(t *testing.T) {
	m := productionModel()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, pieces := range [][]int{{646}, {1131, 673}} {
		p50, all, missed := m.trials(200, pieces, 20, rng)
		if missed > 0.1 || !(p50 > 0 && all >= p50 && all <= 3) { // NaN too: a trial that reached nobody
			t.Errorf("%v: one change in 200 members: median %.2f s, last %.2f s, %.2f members missed", pieces, p50, all, missed)
		}
	}
	if pulled, _, _ := m.churn(200, 1, []int{933}, rng); pulled > 0.01 {
		t.Errorf("one change a second: %.1f%% not delivered by gossip, want none", 100*pulled)
	}
	if pulled, _, _ := m.churn(200, 20, []int{933}, rng); pulled < 0.5 {
		t.Errorf("20 changes a second: %.1f%% not delivered by gossip; 15 packets a second a member cannot carry them", 100*pulled)
	}
}
