package discovery

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/leak"
)

func TestTwoNodesSeeEachOther(t *testing.T) {
	leak.AtCleanup(t, discoveryLeaks)
	a := startNode(t, "a", testRecord(1, 2))
	b := startNode(t, "b", testRecord(2, 1), withSeeds(a))
	waitFor(t, 20*time.Second, "a sees b's workload", func() bool { return a.hasWorkload("b/default/w0") })
	waitFor(t, 20*time.Second, "b sees a's workloads", func() bool { return len(b.d.Workloads()) == 2 })
	w := b.d.Workloads()[0]
	if w.UID != "a/default/w0" || w.Node != "a" || w.Local || w.Tunnel != "HBONE" || w.Capacity != 1 || !w.Healthy {
		t.Errorf("remote workload %+v", w)
	}
	if ms := a.d.Members(); len(ms) != 2 || ms[1].State != "alive" || ms[1].Workloads != 1 {
		t.Errorf("members of a: %+v", ms)
	}
}

// The bounds of the 50-member test, for a loaded 2-core machine under -race. Typical runs are far below them
// (docs/gossip.md has measured numbers).
const (
	convergeBound = 60 * time.Second // 50 nodes started one after the other, until everyone has every record
	updateBound   = 15 * time.Second // a new workload on one node, until every other node sees it
	goneBound     = 30 * time.Second // a node cut off, until its workloads are gone everywhere (grace 2s included)
)

func TestFiftyMembersConverge(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 50 gossip nodes")
	}
	const members = 50
	leak.AtCleanup(t, discoveryLeaks)
	start := time.Now()
	nodes := make([]*testNode, members)
	for i := range nodes {
		var seeds []*testNode
		if i > 0 {
			seeds = []*testNode{nodes[0], nodes[rand.IntN(i)]}
		}
		nodes[i] = startNode(t, fmt.Sprintf("n%02d", i), testRecord(i, 1), withSeeds(seeds...))
	}
	diag := time.Now().Add(3 * time.Second)
	took := waitFor(t, convergeBound, "50 members converge", func() bool {
		for _, n := range nodes {
			if n.d.workloadCount() != members-1 {
				if time.Now().After(diag) {
					diag = diag.Add(time.Hour)
					for _, m := range n.d.Members() {
						if m.State != "alive" || m.RecordVersion != m.Advertised {
							t.Logf("slow: %s: %+v", n.name, m)
						}
					}
					t.Logf("slow: %s has %d workloads", n.name, len(n.d.Workloads()))
				}
				return false
			}
		}
		return true
	})
	t.Logf("50 members converged %s after the last one started (%s after the first)", took, time.Since(start))
	want := knowledge(nodes[0])
	for _, n := range nodes[1:] {
		if got := knowledge(n); !slices.Equal(got, want) {
			t.Fatalf("%s sees %v, %s sees %v", n.name, got, nodes[0].name, want)
		}
	}

	// A new workload on one node is visible on every other one.
	n17 := nodes[17]
	if err := n17.d.SetLocal(*testRecord(17, 2)); err != nil {
		t.Fatal(err)
	}
	took = waitFor(t, updateBound, "the new workload of n17 reaches everyone", func() bool {
		for _, n := range nodes {
			if n != n17 && !n.hasWorkload("n17/default/w1") {
				return false
			}
		}
		return true
	})
	t.Logf("a new workload on n17 was visible on all 49 others after %s", took)

	// A killed node's workloads stay for the grace period, then disappear everywhere.
	n33 := nodes[33]
	n33.tr.cut.Store(true)
	killed := time.Now()
	others := slices.DeleteFunc(slices.Clone(nodes), func(n *testNode) bool { return n == n33 })
	holdsFor(t, 1500*time.Millisecond, "n33's workload stays within the grace period", func() bool {
		for _, n := range others {
			if !n.hasWorkload("n33/default/w0") {
				return time.Since(killed) >= 2*time.Second // a removal before the grace period is an error
			}
		}
		return true
	})
	took = waitFor(t, goneBound, "n33's workloads disappear everywhere", func() bool {
		for _, n := range others {
			if n.hasWorkload("n33/default/w0") {
				return false
			}
		}
		return true
	})
	t.Logf("a killed node's workloads were gone from all 49 others %s after it was cut off (grace 2s)",
		time.Since(killed))
	_ = took
	// A node falsely suspected on a loaded machine is back within seconds: poll before judging.
	wrongCounts := func() (wrong []string) {
		for _, n := range others {
			want := members - 1 // 47 others with one workload, n17 with two
			if n == n17 {
				want = members - 2
			}
			if got := len(n.d.Workloads()); got != want {
				wrong = append(wrong, fmt.Sprintf("%s has %d workloads after n33 left, want %d", n.name, got, want))
			}
		}
		return wrong
	}
	wrong := wrongCounts()
	for deadline := time.Now().Add(10 * time.Second); len(wrong) > 0 && time.Now().Before(deadline); wrong = wrongCounts() {
		time.Sleep(100 * time.Millisecond)
	}
	for _, w := range wrong {
		t.Error(w)
	}
	stopAll(t, nodes)
	for _, n := range nodes {
		if bad := n.logs.find("bad input"); len(bad) > 0 {
			t.Errorf("%s dropped input in normal operation: %v", n.name, bad)
		}
	}
	var sum Stats
	for _, n := range nodes {
		s := n.d.Stats()
		sum.Accepted += s.Accepted
		sum.Relayed += s.Relayed
		sum.Requested += s.Requested
		sum.Replied += s.Replied
		for k, v := range s.Dropped {
			if sum.Dropped == nil {
				sum.Dropped = map[string]uint64{}
			}
			sum.Dropped[k] += v
		}
	}
	t.Logf("all nodes: %+v", sum)
	if testing.Verbose() {
		for _, l := range nodes[5].logs.find("") {
			t.Log("n05: " + l)
		}
	}
}

// knowledge is everything a node knows: its own workloads and the remote ones, as UIDs with record versions.
func knowledge(n *testNode) []string {
	var out []string
	if r, ok := n.d.Local(); ok {
		for _, w := range r.Workloads {
			out = append(out, fmt.Sprintf("%s/%s/%s@%d", n.name, w.Namespace, w.Name, r.Version))
		}
	}
	for _, r := range n.d.Records() {
		for _, w := range r.Workloads {
			out = append(out, fmt.Sprintf("%s/%s/%s@%d", r.Node, w.Namespace, w.Name, r.Version))
		}
	}
	slices.Sort(out)
	return out
}
