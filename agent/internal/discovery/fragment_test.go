package discovery

import (
	"net"

	"bytes"
	"compress/flate"
	crand "crypto/rand"
	"fmt"
	"github.com/hashicorp/memberlist"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/tests/leak"
)

// largeRecord is a host of count workloads, each backing a service of its own: over a broadcast many times.
func largeRecord(id, count int) *Record {
	r := testRecord(id, count)
	for i, w := range r.Workloads {
		w.Labels = map[string]string{"app": fmt.Sprintf("app-%d", i), "version": "v1", "tier": "backend"}
		w.Addresses = append(w.Addresses, netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(id), byte(i >> 8), byte(i)}))
		w.Ports = []uint16{8080, 9090}
		r.Services = append(r.Services, Service{Name: fmt.Sprintf("svc-%d-%d", id, i), Namespace: "default",
			Hostname:  fmt.Sprintf("svc-%d-%d.default.svc.cluster.local", id, i),
			Ports:     []ServicePort{{Port: 80, TargetPort: 8080, AppProtocol: "http"}, {Port: 9090}},
			Workloads: []string{"default/" + w.Name}})
	}
	return r
}

func TestFragmentsRoundTrip(t *testing.T) {
	raw := encodeRecord(largeRecord(7, 50))
	if len(raw) <= maxBroadcastBytes {
		t.Fatalf("a record of 50 workloads is %d bytes: not over a broadcast", len(raw))
	}
	pieces := fragments("n7", 42, raw)
	if len(pieces) < 2 {
		t.Fatalf("%d bytes in %d fragments", len(raw), len(pieces))
	}
	var as assemblies
	var out []byte
	order := rand.Perm(len(pieces))
	order = append([]int{order[0]}, order...) // out of order, one repeated
	for k, i := range order {
		if len(pieces[i]) > maxBroadcastBytes {
			t.Fatalf("fragment %d is %d bytes, over a broadcast", i, len(pieces[i]))
		}
		kind, body, err := decodeMessage(pieces[i])
		if err != nil || kind != kindFragment {
			t.Fatalf("fragment %d: kind %d, %v", i, kind, err)
		}
		f, err := decodeFragment(body)
		if err != nil {
			t.Fatal(err)
		}
		data, err := as.add(f, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if data != nil {
			if k != len(order)-1 {
				t.Fatalf("complete after %d of %d fragments", k+1, len(order))
			}
			if out, err = inflate(data, len(raw)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !bytes.Equal(out, raw) {
		t.Fatalf("put back together: %d bytes, want the %d sent", len(out), len(raw))
	}
	if len(as.byNode) != 0 || as.bytes != 0 {
		t.Errorf("a finished assembly is still held: %d nodes, %d bytes", len(as.byNode), as.bytes)
	}
	t.Logf("a record of 50 workloads and 50 services: %d bytes, %d fragments", len(raw), len(pieces))
}

func TestFragmentsRefused(t *testing.T) {
	now := time.Now()
	piece := func(version uint64, index, count int) fragment {
		return fragment{node: "n1", version: version, digest: [32]byte{byte(version)}, index: index, count: count, data: []byte{1, 2, 3}}
	}
	var as assemblies
	if _, err := as.add(piece(6, 0, 2), now); err != nil {
		t.Fatal(err)
	}
	if _, err := as.add(piece(6, 1, 3), now); reasonOf(err) != reasonMalformed || as.byNode["n1"] != nil {
		t.Errorf("fragments that disagree on their count: %v, assembly %v; want malformed and dropped", err, as.byNode["n1"])
	}
	if _, err := as.add(piece(6, 0, 2), now.Add(failedPace/2)); reasonOf(err) != reasonStale {
		t.Errorf("a fragment of a node whose assembly just failed: %v, want stale (paced)", err)
	}
	if _, err := as.add(piece(6, 0, 2), now.Add(failedPace)); err != nil {
		t.Errorf("a fragment after the pace: %v", err)
	}
	if _, err := as.add(piece(7, 0, 2), now.Add(failedPace)); err != nil || as.byNode["n1"].version != 7 || as.bytes != 3 {
		t.Errorf("a piece of the record the node advertises now: %v, want it to replace the older assembly", err)
	}
	// Each piece of a record is passed on once, whatever becomes of its assemblies: a refused record's pieces die
	// out instead of being passed on again at every copy.
	one := fragment{node: "n2", version: 9, digest: [32]byte{9}, count: 1, data: []byte{1}}
	if !as.relayOnce(one) || as.relayOnce(one) {
		t.Error("a piece is not passed on exactly once")
	}
	if data, err := as.add(one, now); err != nil || data == nil || as.relayOnce(one) {
		t.Errorf("after its record was put together (%v), the piece is passed on again", err)
	}
	if next := (fragment{node: "n2", version: 10, digest: [32]byte{10}, count: 1, data: []byte{1}}); !as.relayOnce(next) {
		t.Error("a piece of the node's next record is not passed on")
	}
	as.expire(now.Add(failedPace + assemblyTimeout + time.Second))
	if len(as.byNode) != 0 || as.bytes != 0 {
		t.Errorf("an unfinished assembly outlived its timeout: %d bytes", as.bytes)
	}

	// The bytes held over all nodes are bounded: pieces of many nodes' records that never finish.
	big := make([]byte, fragmentBytes)
	for i := range maxAssemblyBytes/fragmentBytes + 10 {
		_, err := as.add(fragment{node: fmt.Sprintf("n%d", i), version: 1, count: 2, data: big}, now)
		if as.bytes > maxAssemblyBytes {
			t.Fatalf("%d bytes held after %d nodes' fragments (%v)", as.bytes, i, err)
		}
	}

	ok := fragment{node: "n", version: 1, count: 1, data: []byte{1}}
	for name, f := range map[string]fragment{
		"no node":       {version: 1, count: 1, data: []byte{1}},
		"index ≥ count": {node: "n", version: 1, index: 2, count: 2, data: []byte{1}},
		"too many":      {node: "n", version: 1, count: maxFragments + 1, data: []byte{1}},
		"no data":       {node: "n", version: 1, count: 1},
		"large":         {node: "n", version: 1, count: 1, data: make([]byte, fragmentBytes+1)},
	} {
		if _, err := decodeFragment(encodeFragment(f)[3:]); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	if _, err := decodeFragment(encodeFragment(ok)[3:]); err != nil {
		t.Errorf("a good fragment: %v", err)
	}
	noDigest := encodeFragment(ok)[3:]
	if _, err := decodeFragment(noDigest[:len(noDigest)-34]); err == nil {
		t.Error("a fragment without its digest decoded")
	}

	// A compressed bomb inflates no further than the advertised size.
	var z bytes.Buffer
	w, _ := flate.NewWriter(&z, flate.BestCompression)
	_, _ = w.Write(make([]byte, 10*MaxRecordBytes))
	_ = w.Close()
	if _, err := inflate(z.Bytes(), 1<<30); reasonOf(err) != reasonTooLarge {
		t.Errorf("a bomb of %d compressed bytes: %v, want too_large", z.Len(), err)
	}
	if _, err := inflate(z.Bytes(), 2000); reasonOf(err) != reasonTooLarge {
		t.Errorf("more than the advertised size: %v, want too_large", err)
	}
	noise := make([]byte, 512)
	_, _ = crand.Read(noise)
	if _, err := inflate(noise, MaxRecordBytes); err == nil {
		t.Error("random bytes inflated")
	}
}

// Pieces count only for the record their node advertises: forged ones spoil an assembly at most, and the
// record still arrives whole from honest pieces once the failure's pace has passed.
func TestForgedFragments(t *testing.T) {
	d, err := New(Options{NodeName: "self", Bind: netip.MustParseAddrPort("127.0.0.1:0"), Keys: [][]byte{testKey}, Trust: testTrust()})
	if err != nil {
		t.Fatal(err)
	}
	rec := largeRecord(1, 50)
	rec.Node, rec.Version = "vm-1", uint64(time.Now().UnixNano())
	raw := signed(t, rec)
	d.memberUp(&memberlist.Node{Name: "vm-1", Addr: net.IPv4(10, 0, 0, 1), Port: 7946, Meta: encodeMeta(advertOf(raw, rec.Version))})
	honest := fragments("vm-1", rec.Version, raw)
	if len(honest) < 2 {
		t.Fatalf("%d fragments", len(honest))
	}
	// Pieces of a record it does not advertise: dropped before they are held.
	other := fragments("vm-1", rec.Version+1, raw)
	for _, m := range other {
		d.receive(m)
	}
	if d.assembling.bytes != 0 {
		t.Fatalf("pieces of an unadvertised record are held: %d bytes", d.assembling.bytes)
	}
	// A forged piece with the advertised version and digest spoils the assembly.
	kind, body, _ := decodeMessage(honest[0])
	f, _ := decodeFragment(body)
	if kind != kindFragment {
		t.Fatal(kind)
	}
	f.data = bytes.Repeat([]byte{0xff}, len(f.data))
	d.receive(encodeFragment(f))
	for _, m := range honest[1:] {
		d.receive(m)
	}
	if len(d.Workloads()) != 0 || d.assembling.failed["vm-1"].IsZero() {
		t.Fatalf("forged piece: %d workloads in use, failure %v", len(d.Workloads()), d.assembling.failed["vm-1"])
	}
	d.mu.Lock()
	d.assembling.failed["vm-1"] = time.Now().Add(-failedPace)
	d.mu.Unlock()
	for _, m := range honest {
		d.receive(m)
	}
	if got := len(d.Workloads()); got != 50 {
		t.Fatalf("the honest pieces gave %d workloads, want 50", got)
	}
}

// A host's record of 50 workloads and 50 services, many broadcasts large, reaches every member of a pool of more
// than a hundred by gossip, in fragments: no member asks its node for it (production timings).
func TestLargeRecordReachesHundredMembers(t *testing.T) {
	const members = 110
	leak.AtCleanup(t, discoveryLeaks)
	nodes := make([]*testNode, members)
	begin := time.Now()
	for i := range nodes {
		cfgs := []nodeConfig{withProductionTiming, withGrace(30 * time.Second)}
		if i > 0 {
			cfgs = append(cfgs, withSeeds(nodes[0], nodes[rand.IntN(i)]))
		}
		nodes[i] = startNode(t, fmt.Sprintf("n%03d", i), testRecord(i, 1), cfgs...)
	}
	started := time.Now()
	converged := waitFor(t, 3*time.Minute, "the pool converges", func() bool {
		for _, n := range nodes {
			if n.d.workloadCount() != members-1 {
				return false
			}
		}
		return true
	})
	t.Logf("%d members started in %s, converged %s later", members, started.Sub(begin), converged)
	time.Sleep(3 * time.Second) // the joins' broadcasts drain
	before := poolStats(nodes)
	owner := nodes[members/2]
	ownerBefore := owner.d.Stats()
	rec := largeRecord(members/2, 50)
	if err := owner.d.SetLocal(*rec); err != nil {
		t.Fatal(err)
	}
	uid := owner.name + "/default/w49"
	took := waitFor(t, updateBound, "the large record reaches every member", func() bool {
		for _, n := range nodes {
			if n != owner && !n.hasWorkload(uid) {
				return false
			}
		}
		return true
	})
	after := poolStats(nodes)
	stopAll(t, nodes)
	owner.d.mu.Lock()
	size := len(owner.d.local.raw)
	owner.d.mu.Unlock()
	t.Logf("a record of %d bytes reached %d members in %s: accepted %d, relayed %d, requests %d, replies %d (the owner's %d)",
		size, members-1, took, after.Accepted-before.Accepted, after.Relayed-before.Relayed,
		after.Requested-before.Requested, after.Replied-before.Replied, owner.d.Stats().Replied-ownerBefore.Replied)
	if size <= maxBroadcastBytes {
		t.Fatalf("the record is %d bytes: it fits a broadcast, the test proves nothing", size)
	}
	if n := owner.d.Stats().Replied - ownerBefore.Replied; n != 0 {
		t.Errorf("the owner answered %d requests for its record: members pulled it", n)
	}
	if n := after.Replied - before.Replied; n != 0 {
		t.Errorf("members answered %d requests for records", n)
	}
	for _, n := range nodes {
		if n == owner {
			continue
		}
		if ws := n.d.Workloads(); !containsUID(ws, uid) {
			t.Errorf("%s lacks %s", n.name, uid)
		}
	}
}

func containsUID(ws []*state.Workload, uid string) bool {
	for _, w := range ws {
		if w.UID == uid {
			return true
		}
	}
	return false
}
