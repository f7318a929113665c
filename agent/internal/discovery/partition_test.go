package discovery

import (
	"fmt"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/leak"
)

// The in-process version of the lab's link test: cutting one host off removes it from the others after the
// grace period; restoring the link brings it back, with no seed list change and no restart.
func TestPartitionHeals(t *testing.T) {
	leak.AtCleanup(t, discoveryLeaks)
	var nodes []*testNode
	for i := range 4 {
		var seeds []*testNode
		if i > 0 {
			seeds = nodes[:1]
		}
		nodes = append(nodes, startNode(t, fmt.Sprintf("h%d", i+1), testRecord(i, 1), withSeeds(seeds...)))
	}
	all := func(cond func(n, m *testNode) bool) func() bool {
		return func() bool {
			for _, n := range nodes {
				for _, m := range nodes {
					if n != m && !cond(n, m) {
						return false
					}
				}
			}
			return true
		}
	}
	sees := func(n, m *testNode) bool { return n.hasWorkload(m.name + "/default/w0") }
	waitFor(t, 20*time.Second, "4 hosts form a mesh", all(sees))

	h4 := nodes[3]
	h4.tr.cut.Store(true)
	took := waitFor(t, 60*time.Second, "h4 is removed from the others", all(func(n, m *testNode) bool {
		return n == h4 || sees(n, m) == (m != h4)
	}))
	t.Logf("cut: h4 gone from the others after %s", took)

	h4.tr.cut.Store(false)
	took = waitFor(t, 30*time.Second, "h4 is back everywhere", all(sees))
	t.Logf("healed: h4 back everywhere after %s", took)
}

// A graceful leave is seen at once (no failure detection); the records still stay for the grace period.
func TestLeaveKeepsRecordsForTheGracePeriod(t *testing.T) {
	leak.AtCleanup(t, discoveryLeaks)
	a := startNode(t, "a", testRecord(1, 1), withGrace(3*time.Second))
	b := startNode(t, "b", testRecord(2, 1), withSeeds(a))
	waitFor(t, 20*time.Second, "a sees b", func() bool { return a.hasWorkload("b/default/w0") })
	// Taken before the leave: a hears of it while b.stop still waits for its
	// broadcast to go out (a few gossip rounds), so a's grace period starts
	// after this, never before.
	left := time.Now()
	b.stop(t)
	waitFor(t, 5*time.Second, "a sees b down", func() bool {
		ms := a.d.Members()
		return len(ms) == 2 && ms[1].State == "down"
	})
	if !a.hasWorkload("b/default/w0") && time.Since(left) < 3*time.Second {
		t.Fatal("b's workload was removed before the grace period")
	}
	waitFor(t, 10*time.Second, "b's workload is removed", func() bool { return !a.hasWorkload("b/default/w0") })
	if gone := time.Since(left); gone < 3*time.Second {
		t.Errorf("removed %s after the leave, before the 3s grace period", gone)
	}
	select {
	case <-a.d.Changed():
	default:
		t.Error("no change notification")
	}
}

// memberlist's membership gossip can miss a node now and then; a record of that node, relayed by others, carries
// its address, and the receiver joins it at once rather than at the next push/pull.
func TestRecordOfUnknownNodeJoinsIt(t *testing.T) {
	leak.AtCleanup(t, discoveryLeaks)
	a := startNode(t, "a", testRecord(1, 1))
	b := startNode(t, "b", testRecord(2, 1)) // not told about a, nor a about b
	bRec, _ := b.d.Local()
	if bRec.Address != b.d.LocalAddr() {
		t.Fatalf("b's record carries address %s, b is at %s", bRec.Address, b.d.LocalAddr())
	}
	holdsFor(t, time.Second, "two separate pools", func() bool { return len(a.d.Members()) == 1 })
	a.d.receive(encodeMessage(kindBroadcast, signed(t, &bRec))) // as if relayed by a third node
	waitFor(t, 20*time.Second, "a joins b", func() bool {
		return a.hasWorkload("b/default/w0") && b.hasWorkload("a/default/w0")
	})
}
