package discovery

import (
	"bytes"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/tests/leak"
)

// rogue is a member that holds the key but speaks garbage: a raw memberlist node whose metadata, push/pull
// state and messages the test writes by hand.
type rogue struct {
	ml    *memberlist.Memberlist
	meta  []byte
	state atomic.Pointer[[]byte]
}

func (r *rogue) NodeMeta(int) []byte             { return r.meta }
func (r *rogue) NotifyMsg([]byte)                {}
func (r *rogue) GetBroadcasts(int, int) [][]byte { return nil }
func (r *rogue) LocalState(bool) []byte          { return *r.state.Load() }
func (r *rogue) MergeRemoteState([]byte, bool)   {}

func startRogue(t *testing.T, meta, state []byte) *rogue {
	t.Helper()
	r := &rogue{meta: meta}
	r.state.Store(&state)
	c := memberlist.DefaultLANConfig()
	c.Name, c.BindAddr, c.BindPort, c.Label = "rogue", "127.0.0.1", 0, gossipLabel
	c.Logger = log.New(io.Discard, "", 0)
	c.Delegate = r
	testTiming(c)
	kr, err := newKeyring([][]byte{testKey})
	if err != nil {
		t.Fatal(err)
	}
	c.Keyring = kr
	if r.ml, err = memberlist.Create(c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.ml.Shutdown() })
	return r
}

func (r *rogue) send(t *testing.T, to *testNode, msgs ...[]byte) {
	t.Helper()
	a := to.d.LocalAddr()
	node := &memberlist.Node{Name: to.name, Addr: a.Addr().AsSlice(), Port: a.Port()}
	for _, m := range msgs {
		if err := r.ml.SendReliable(node, m); err != nil {
			t.Fatalf("rogue send: %v", err)
		}
		if len(m) < 1000 {
			_ = r.ml.SendBestEffort(node, m) // and by UDP
		}
	}
}

func TestBadInputIsDroppedWhole(t *testing.T) {
	leak.AtCleanup(t, discoveryLeaks)
	a := startNode(t, "a", testRecord(1, 1))
	b := startNode(t, "b", testRecord(2, 1), withSeeds(a))
	waitFor(t, 20*time.Second, "a sees b", func() bool { return a.hasWorkload("b/default/w0") })
	bRec, _ := b.d.Local()

	// The rogue's own record: one good workload, one with a loopback address. It advertises exactly this
	// record, so the digest matches; the record must still be dropped whole.
	bad := &Record{Node: "rogue", Version: 5, Workloads: []*state.Workload{testWorkload(9, 0), testWorkload(9, 1)}}
	bad.Workloads[1].Addresses = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	badRaw := encodeRecord(bad)

	forgedSame := &Record{Node: "b", Version: bRec.Version, Workloads: []*state.Workload{testWorkload(66, 0)}}
	forgedNewer := &Record{Node: "b", Version: bRec.Version + 1000, Workloads: []*state.Workload{testWorkload(66, 0)}}
	mine := &Record{Node: "a", Version: 1 << 62, Workloads: []*state.Workload{testWorkload(77, 0)}}
	oversized := append(bytes.Clone(badRaw), make([]byte, MaxRecordBytes)...)
	newer := append([]byte{formatMagic, formatVersion + 1}, badRaw[2:]...)
	good := signed(t, testRecord(3, 1))
	pushState := encodeState([][]byte{[]byte("garbage"), signed(t, forgedSame), badRaw, good[:len(good)/2], newer})

	// Records of the rogue's own node that prove too little: unsigned; signed by a root the mesh does not trust;
	// claiming an identity it holds no key for; signed long ago; claiming an address its certificate does not name.
	// Each is newer than what the rogue advertises, so that it passes the table's checks and meets the proofs'.
	version := uint64(5)
	rogueRec := func(sa string) *Record {
		w := testWorkload(9, 0)
		w.ServiceAccount = sa
		version++
		return &Record{Node: "rogue", Version: version, Workloads: []*state.Workload{w}}
	}
	mesh, foreign := testCAs()
	rogueID, _ := identityOf("cluster.local", "default", "sa")
	day := time.Now().Add(24 * time.Hour).Truncate(time.Hour)
	stale, _, _ := signRecord(encodeRecord(rogueRec("sa")), []*x509svid.SVID{mesh.issue(rogueID, day)}, time.Now().Add(-2*ProofLifetime))
	unproven := []([]byte){
		encodeRecord(rogueRec("sa")),
		signedBy(t, rogueRec("sa"), foreign.issue(rogueID, day)),
		signedBy(t, func() *Record { // its own identity signed, the victim's not
			r := rogueRec("victim")
			w := testWorkload(9, 1)
			r.Workloads = append(r.Workloads, w)
			return r
		}(), mesh.issue(rogueID, day)),
		stale,
		signedBy(t, rogueRec("sa"), mesh.issue(rogueID, day, netip.MustParseAddr("10.9.9.9"))),
	}

	r := startRogue(t, encodeMeta(advertOf(badRaw, 5)), pushState)
	if _, err := r.ml.Join([]string{a.d.LocalAddr().String()}); err != nil { // a push/pull with a
		t.Fatal(err)
	}
	r.send(t, a,
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		append([]byte{formatMagic, formatVersion + 1}, "from the future"...),
		encodeMessage(kindReply, oversized),
		encodeMessage(kindReply, badRaw),
		encodeMessage(kindBroadcast, newer),
		encodeMessage(kindBroadcast, signed(t, forgedSame)),
		encodeMessage(kindBroadcast, signed(t, forgedNewer)),
		encodeMessage(kindBroadcast, signed(t, mine)),
		encodeMessage(kindBroadcast, []byte{0xff, 0xff, 0xff}),
		encodeMessage(kindRequest, []byte{0x0a, 0xff}),
		encodeMessage(kindState, []byte("a state is not a message")),
		encodeMessage(99, nil),
	)
	for _, raw := range unproven { // a record its node does not advertise is verified once a second
		time.Sleep(1100 * time.Millisecond)
		r.send(t, a, encodeMessage(kindReply, raw))
	}
	for _, want := range []string{reasonMalformed, reasonIncompatible, reasonTooLarge, reasonInvalid, reasonMismatch,
		reasonUnsigned, reasonBadProof, reasonUnproven, reasonExpired, reasonAddressSANs} {
		waitFor(t, 20*time.Second, "a drops "+want+" input", func() bool { return a.d.Stats().Dropped[want] > 0 })
		if len(a.logs.find("dropped bad input", "reason="+want)) == 0 {
			t.Errorf("no warning for %s input; logged: %v", want, a.logs.find(""))
		}
	}
	t.Logf("a dropped %v", a.d.Stats().Dropped)

	// Nothing of it was applied: b's record is the real one, the rogue is a member without a record.
	holdsFor(t, 2*time.Second, "a's view is intact", func() bool {
		recs := a.d.Records()
		return len(recs) == 1 && recs[0].Node == "b" && recs[0].Version == bRec.Version && !a.hasWorkload("b/default/w66") &&
			!a.hasWorkload("rogue/default/w0") && !a.hasWorkload("a/default/w0")
	})
	var rogueMember *Member
	for _, m := range a.d.Members() {
		if m.Name == "rogue" {
			rogueMember = &m
		}
	}
	if rogueMember == nil || rogueMember.State != "alive" || rogueMember.RecordVersion != 0 || rogueMember.Advertised != 5 {
		t.Errorf("a's view of the rogue: %+v", rogueMember)
	}

	// And a still works: b's next record arrives.
	if err := b.d.SetLocal(*testRecord(2, 2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a sees b's new workload", func() bool { return a.hasWorkload("b/default/w1") })
}

// Seeds that are not gossip nodes (an HTTP server, a TCP server that talks garbage, a closed port) are reported
// and retried, never a crash; the good seed among them is joined.
func TestSeedsThatAreNotGossipNodes(t *testing.T) {
	leak.AtCleanup(t, discoveryLeaks)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not gossip", http.StatusTeapot)
	}))
	defer web.Close()
	garbage := talkGarbage(t)
	closed := closedPort(t)

	a := startNode(t, "a", testRecord(1, 1))
	seeds := func(_ *testNode, o *Options) {
		o.Join = append([]string{strings.TrimPrefix(web.URL, "http://"), garbage, closed}, o.Join...)
	}
	lonely := startNode(t, "lonely", testRecord(2, 1), seeds)
	waitFor(t, 20*time.Second, "lonely retries its seeds", func() bool {
		return len(lonely.logs.find("no seed answered")) > 0
	})
	holdsFor(t, 2*time.Second, "lonely stays alone", func() bool { return len(lonely.d.Members()) == 1 })

	x := startNode(t, "x", testRecord(3, 1), seeds, withSeeds(a))
	waitFor(t, 20*time.Second, "x joins through its one good seed", func() bool {
		return a.hasWorkload("x/default/w0") && x.hasWorkload("a/default/w0")
	})
	t.Logf("lonely logged %v", lonely.logs.find("no seed"))
}

// talkGarbage listens on a port that answers every connection with noise.
func talkGarbage(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write(bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 1024))
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
