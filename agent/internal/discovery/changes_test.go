package discovery

import (
	"slices"
	"testing"
	"time"
)

// heldWith is node's record of version with workload id, healthy or not, and a service when svc is set.
func heldWith(node string, version uint64, healthy bool, svc string) *held {
	r := &Record{Node: node, Version: version}
	w := testWorkload(1, 0)
	w.Healthy = healthy
	r.Workloads = append(r.Workloads, w)
	if svc != "" {
		r.Services = []Service{{Name: svc, Namespace: "default", Ports: []ServicePort{{Port: 80}}, Workloads: []string{"default/w0"}}}
	}
	return newHeld(r, encodeRecord(r), false, proven{signed: true, expires: time.Now().Add(time.Hour)})
}

func TestChangesSince(t *testing.T) {
	tb := newTable("a", time.Minute, time.Hour)
	offer := func(h *held) uint64 {
		t.Helper()
		tb.up(h.rec.Node, addrB, h.advert, true, t0)
		mustOutcome(t, tb, h, accepted, "")
		return tb.gen
	}
	g1 := offer(heldWith("b", 1, true, "s"))
	if _, ok := tb.changesSince(0); ok {
		t.Error("changes since generation 0 (a consumer that never read the table): ok")
	}
	if nodes, ok := tb.changesSince(g1); !ok || len(nodes) != 0 {
		t.Errorf("no change since the current generation: %v, %v", nodes, ok)
	}
	if _, ok := tb.changesSince(g1 - 1); ok {
		t.Error("a node's first record is not a change of workloads")
	}
	offer(heldWith("b", 2, false, "s")) // health only
	g3 := offer(heldWith("b", 3, true, "s"))
	if nodes, ok := tb.changesSince(g1); !ok || !slices.Equal(nodes, []string{"b"}) {
		t.Errorf("two health changes of b: %v, %v; want [b], ok", nodes, ok)
	}
	offer(heldWith("b", 4, true, "other")) // a service changed
	if _, ok := tb.changesSince(g3); ok {
		t.Error("a change of b's services counted as a change of its workloads")
	}
	g5 := tb.gen
	tb.down("b", t0, false)
	tb.expire(t0.Add(2 * time.Minute)) // its record dropped after the grace period
	if _, ok := tb.changesSince(g5); ok {
		t.Error("a record dropped counted as a change of workloads")
	}
	// The log is bounded; a consumer further behind than it reaches is told to build.
	tb2 := newTable("a", time.Minute, time.Hour)
	first := func() uint64 { tb2.up("c", addrB, heldWith("c", 1, true, "").advert, true, t0); return tb2.gen }()
	for v := uint64(1); v <= maxChanges+10; v++ {
		h := heldWith("c", v, v%2 == 0, "")
		tb2.up("c", addrB, h.advert, true, t0)
		if out, err := tb2.offer(h, t0); out != accepted {
			t.Fatalf("v%d: %v %v", v, out, err)
		}
	}
	if len(tb2.changes) > maxChanges {
		t.Errorf("the log holds %d changes, more than %d", len(tb2.changes), maxChanges)
	}
	if _, ok := tb2.changesSince(first + 1); ok {
		t.Error("changes since a generation the log no longer reaches: ok")
	}
	if nodes, ok := tb2.changesSince(tb2.gen - 5); !ok || !slices.Equal(nodes, []string{"c"}) {
		t.Errorf("recent changes: %v, %v", nodes, ok)
	}
}
