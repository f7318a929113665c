package discovery

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// rec builds a held record of node with version and one workload per id.
func rec(node string, version uint64, relay bool, ids ...int) *held {
	r := &Record{Node: node, Version: version}
	for _, id := range ids {
		r.Workloads = append(r.Workloads, testWorkload(id, 0))
	}
	return newHeld(r, encodeRecord(r), relay, proven{signed: true, expires: time.Now().Add(time.Hour)})
}

var addrB = netip.MustParseAddrPort("10.9.0.2:7946")

func mustOutcome(t *testing.T, tb *table, h *held, want outcome, reason string) {
	t.Helper()
	got, err := tb.offer(h, t0)
	var d *dropError
	if got != want || (reason != "" && (!errors.As(err, &d) || d.reason != reason)) {
		t.Fatalf("offer(%s v%d) = %v, %v; want %v %s", h.rec.Node, h.advert.version, got, err, want, reason)
	}
}

func TestTableUsesOnlyTheAdvertisedRecord(t *testing.T) {
	tb := newTable("a", time.Minute, time.Hour)
	v1, v2 := rec("b", 1, false, 1), rec("b", 2, true, 2)

	mustOutcome(t, tb, v1, dropped, reasonUnknownNode) // not a member yet
	tb.up("b", addrB, v1.advert, true, t0)
	mustOutcome(t, tb, v1, accepted, "")
	mustOutcome(t, tb, v1, duplicate, "")
	if cur := tb.current(); len(cur) != 1 || cur[0] != v1 {
		t.Fatalf("current = %v", cur)
	}

	// A newer record before its advertisement waits; the advertisement makes it current.
	gen := tb.gen
	mustOutcome(t, tb, v2, heldBack, "")
	if tb.gen != gen || tb.current()[0] != v1 {
		t.Fatal("a record was used before its node advertised it")
	}
	if got := tb.up("b", addrB, v2.advert, true, t0); got != v2 || tb.current()[0] != v2 || tb.gen == gen {
		t.Fatalf("the advertisement did not promote the held record: %v", got)
	}

	// The old one, relayed late or pushed by a peer, is stale.
	mustOutcome(t, tb, v1, dropped, reasonStale)
	// Same version, other content: forged (or two nodes with one name).
	forged := rec("b", 2, true, 9)
	mustOutcome(t, tb, forged, dropped, reasonMismatch)
	// A record in this node's own name is never taken.
	mustOutcome(t, tb, rec("a", 99, true, 3), dropped, reasonSelf)
	if tb.current()[0] != v2 {
		t.Fatal("current record replaced")
	}
}

func TestTableForgedNewerRecordIsNeverUsed(t *testing.T) {
	tb := newTable("a", time.Minute, time.Hour)
	v1 := rec("b", 1, false, 1)
	tb.up("b", addrB, v1.advert, true, t0)
	mustOutcome(t, tb, v1, accepted, "")
	forged := rec("b", 1000, true, 66)
	mustOutcome(t, tb, forged, heldBack, "")
	// b publishes its real v2: the held forgery is discarded, not promoted.
	v2 := rec("b", 2, false, 2)
	if got := tb.up("b", addrB, v2.advert, true, t0); got != nil {
		t.Fatalf("promoted %v", got)
	}
	if tb.peers["b"].pending != forged {
		t.Fatal("a held record newer than the advertisement was dropped") // still newer: kept, harmless
	}
	mustOutcome(t, tb, v2, accepted, "")
	if tb.current()[0] != v2 {
		t.Fatal("the forgery was used")
	}
}

func TestTableGracePeriod(t *testing.T) {
	grace := 30 * time.Second
	tb := newTable("a", grace, time.Hour)
	v1 := rec("b", 1, false, 1)
	tb.up("b", addrB, v1.advert, true, t0)
	mustOutcome(t, tb, v1, accepted, "")

	tb.down("b", t0, false)
	if gone := tb.expire(t0.Add(grace - time.Second)); len(gone) != 0 || len(tb.current()) != 1 {
		t.Fatal("records dropped within the grace period")
	}
	gen := tb.gen
	if gone := tb.expire(t0.Add(grace)); len(gone) != 1 || len(tb.current()) != 0 || tb.gen == gen {
		t.Fatalf("records kept after the grace period: %v", gone)
	}
	// After the grace period, push/pull from a peer that still has the record cannot bring it back.
	if out, err := tb.offer(v1, t0.Add(grace+time.Second)); out != dropped || reasonOf(err) != reasonUnknownNode {
		t.Fatalf("a dead node's record was resurrected: %v %v", out, err)
	}
	if got := tb.downAddrs(); len(got) != 1 || got[0] != addrB {
		t.Errorf("rejoin candidates = %v", got)
	}
	// Alive again (a healed partition): the advertised record is wanted and accepted again.
	tb.up("b", addrB, v1.advert, true, t0.Add(2*grace))
	if w := tb.wanted(t0.Add(2*grace), 0, time.Second); len(w) != 1 || w[0].name != "b" || w[0].addr != addrB {
		t.Fatalf("wanted = %v", w)
	}
	mustOutcome(t, tb, v1, accepted, "")
	// Forgotten after the reconnect period.
	tb.down("b", t0.Add(3*grace), false)
	tb.expire(t0.Add(3*grace + time.Hour))
	if len(tb.peers) != 0 {
		t.Error("a node down for longer than the reconnect period is still kept")
	}
}

func TestTableBackWithinGraceKeepsRecord(t *testing.T) {
	tb := newTable("a", time.Minute, time.Hour)
	v1 := rec("b", 1, false, 1)
	tb.up("b", addrB, v1.advert, true, t0)
	mustOutcome(t, tb, v1, accepted, "")
	tb.down("b", t0, false)
	gen := tb.gen
	tb.up("b", addrB, v1.advert, true, t0.Add(10*time.Second))
	tb.expire(t0.Add(2 * time.Minute))
	if len(tb.current()) != 1 || tb.gen != gen {
		t.Fatal("a node back within the grace period lost its record")
	}
}

func TestTableZeroGrace(t *testing.T) {
	tb := newTable("a", 0, 0)
	v1 := rec("b", 1, false, 1)
	tb.up("b", addrB, v1.advert, true, t0)
	mustOutcome(t, tb, v1, accepted, "")
	tb.down("b", t0, false)
	if len(tb.current()) != 0 {
		t.Fatal("grace 0 kept the record")
	}
}

func TestTableWanted(t *testing.T) {
	tb := newTable("a", time.Minute, time.Hour)
	small := rec("b", 1, false, 1)
	tb.up("b", addrB, small.advert, true, t0)
	big := advert{version: 1, size: maxBroadcastBytes + 1}
	tb.up("c", netip.MustParseAddrPort("10.9.0.3:7946"), big, true, t0)
	tb.up("d", netip.MustParseAddrPort("10.9.0.4:7946"), advert{}, false, t0) // publishes nothing

	delay, retry := 2*time.Second, 5*time.Second
	if w := tb.wanted(t0, delay, retry); len(w) != 0 {
		t.Fatalf("asked at once: %v", w)
	}
	if w := tb.wanted(t0.Add(delay), delay, retry); len(w) != 1 || w[0].name != "b" {
		t.Fatalf("after the delay the missing small one (c travels in fragments: three times the delay): %v", w)
	}
	if w := tb.wanted(t0.Add(3*delay), delay, retry); len(w) != 1 || w[0].name != "c" {
		t.Fatalf("after three times the delay the large one (b was just asked): %v", w)
	}
	if w := tb.wanted(t0.Add(3*delay+500*time.Millisecond), delay, retry); len(w) != 0 {
		t.Fatalf("asked again within the retry interval: %v", w)
	}
	mustOutcome(t, tb, small, accepted, "")
	if w := tb.wanted(t0.Add(time.Hour), delay, retry); len(w) != 1 || w[0].name != "c" {
		t.Fatalf("after b's record arrived: %v", w)
	}
}

func TestAnswerNamesRecords(t *testing.T) {
	d, err := New(Options{NodeName: "a", Bind: netip.MustParseAddrPort("127.0.0.1:0"), Keys: [][]byte{testKey}, Trust: testTrust()})
	if err != nil {
		t.Fatal(err)
	}
	if msg := d.answer(request{from: "z"}); msg != nil {
		t.Fatal("answered with a record before having one")
	}
	if err := d.SetLocal(*testRecord(1, 1)); err != nil {
		t.Fatal(err)
	}
	b, c := rec("b", 1, false, 2), rec("c", 1, false, 3)
	for _, h := range []*held{b, c} {
		d.table.up(h.rec.Node, addrB, h.advert, true, t0)
		mustOutcome(t, d.table, h, accepted, "")
	}
	kind, body, err := decodeMessage(d.answer(request{from: "z"}))
	if err != nil || kind != kindReply {
		t.Fatalf("own record: %v %v", kind, err)
	}
	if r, err := decodeRecord(body); err != nil || r.Node != "a" {
		t.Fatalf("own record: %+v %v", r, err)
	}
	kind, body, err = decodeMessage(d.answer(request{from: "z", want: []string{"c", "nobody", "a"}}))
	if err != nil || kind != kindRecords {
		t.Fatalf("named records: %v %v", kind, err)
	}
	records, err := decodeState(body)
	if err != nil || len(records) != 2 || string(records[0]) != string(c.raw) {
		t.Fatalf("named records: %d %v", len(records), err)
	}
	if r, _ := decodeRecord(records[1]); r.Node != "a" {
		t.Errorf("second record is %s's", r.Node)
	}
	if d.answer(request{from: "z", want: []string{"nobody"}}) != nil {
		t.Error("answered a request for records this node does not hold")
	}
	if got := d.table.randomAlive(); got.name != "b" && got.name != "c" {
		t.Errorf("randomAlive = %+v", got)
	}
}

// A node that restarts advertises no record until its certificates sign one:
// its previous record stays in use for the grace period, then goes.
func TestRecordOfANodeWithoutAdvertisementStaysForTheGracePeriod(t *testing.T) {
	tb := newTable("a", time.Minute, time.Hour)
	v1 := rec("b", 1, false, 1)
	tb.up("b", addrB, v1.advert, true, t0)
	mustOutcome(t, tb, v1, accepted, "")
	tb.up("b", addrB, advert{}, false, t0.Add(time.Second)) // restarted, nothing signed yet
	if len(tb.current()) != 1 || len(tb.expire(t0.Add(50*time.Second))) != 0 {
		t.Fatal("the record went before the grace period")
	}
	if gone := tb.expire(t0.Add(62 * time.Second)); len(gone) != 1 || len(tb.current()) != 0 {
		t.Fatalf("after the grace period: gone %v, current %v", gone, tb.current())
	}
}

// An older record never comes back, even advertised (a forged advertisement,
// until its node refutes it): what its node removed stays removed.
func TestOlderRecordNeverReturns(t *testing.T) {
	tb := newTable("a", time.Minute, time.Hour)
	v1, v2 := rec("b", 1, false, 1), rec("b", 2, false, 2)
	tb.up("b", addrB, v1.advert, true, t0)
	mustOutcome(t, tb, v1, accepted, "")
	tb.up("b", addrB, v2.advert, true, t0)
	mustOutcome(t, tb, v2, accepted, "")
	tb.up("b", addrB, v1.advert, true, t0) // forged
	mustOutcome(t, tb, v1, dropped, reasonStale)
	if cur := tb.current(); len(cur) != 1 || cur[0] != v2 {
		t.Fatalf("current = %v", cur)
	}
}

// A node that failed or was cut off leaves its workloads' addresses unreachable once its record is dropped, until
// it is back with a record or forgotten; a node that left leaves none.
func TestTableUnreachableAddresses(t *testing.T) {
	grace := 30 * time.Second
	tb := newTable("a", grace, time.Hour)
	v1 := rec("b", 1, false, 1)
	tb.up("b", addrB, v1.advert, true, t0)
	mustOutcome(t, tb, v1, accepted, "")
	want := v1.workloads[0].Addresses
	if len(want) == 0 || tb.unreachable() != nil {
		t.Fatalf("addresses %v, unreachable %v while the node is up", want, tb.unreachable())
	}
	tb.down("b", t0, false)
	if tb.unreachable() != nil {
		t.Error("unreachable within the grace period, while the record is in use")
	}
	gen := tb.gen
	tb.expire(t0.Add(grace))
	got := tb.unreachable()
	if len(got) != len(want) || got[want[0]] != "b" || tb.gen == gen {
		t.Fatalf("after the grace period: unreachable %v, want %v of b (and a new generation)", got, want)
	}
	tb.up("b", addrB, v1.advert, true, t0.Add(2*grace))
	if tb.unreachable() == nil {
		t.Error("back, but without its record yet: the addresses must stay unreachable")
	}
	mustOutcome(t, tb, v1, accepted, "")
	if tb.unreachable() != nil {
		t.Errorf("back with its record: unreachable %v", tb.unreachable())
	}
	// Forgotten after the reconnect period.
	tb.down("b", t0.Add(3*grace), false)
	tb.expire(t0.Add(4 * grace))
	if tb.unreachable() == nil {
		t.Fatal("no unreachable addresses after a second failure")
	}
	tb.expire(t0.Add(3*grace + time.Hour))
	if tb.unreachable() != nil {
		t.Error("still unreachable after the reconnect period")
	}

	// A node that left: nothing held.
	tb = newTable("a", grace, time.Hour)
	tb.up("b", addrB, v1.advert, true, t0)
	mustOutcome(t, tb, v1, accepted, "")
	tb.down("b", t0, true)
	tb.expire(t0.Add(grace))
	if tb.unreachable() != nil {
		t.Errorf("a node that left: unreachable %v", tb.unreachable())
	}
}
