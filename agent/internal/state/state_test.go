package state

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

func wl(uid string, local bool, addrs ...string) *Workload {
	w := &Workload{UID: uid, Name: uid, Namespace: "default", ServiceAccount: "sa", TrustDomain: "cluster.local", Local: local}
	for _, a := range addrs {
		w.Addresses = append(w.Addresses, netip.MustParseAddr(a))
	}
	return w
}

func TestSnapshotIndexes(t *testing.T) {
	s := NewSnapshot(1, []*Workload{wl("b", false, "10.0.0.2"), wl("a", true, "10.0.0.1", "fd00::1")})
	if w, ok := s.LocalByAddr(netip.MustParseAddr("fd00::1")); !ok || w.UID != "a" {
		t.Errorf("LocalByAddr(fd00::1) = %v, %v", w, ok)
	}
	if _, ok := s.LocalByAddr(netip.MustParseAddr("10.0.0.2")); ok {
		t.Error("a remote workload was returned as local")
	}
	if w, ok := s.WorkloadByAddr(netip.MustParseAddr("::ffff:10.0.0.2")); !ok || w.UID != "b" {
		t.Errorf("WorkloadByAddr of a v4-mapped address = %v, %v", w, ok)
	}
	if _, ok := s.WorkloadByAddr(netip.MustParseAddr("10.0.0.3")); ok {
		t.Error("unknown address found")
	}
	if got := s.Local(); len(got) != 1 || got[0].UID != "a" {
		t.Errorf("Local() = %v", got)
	}
}

// claim is a remote workload claiming 10.0.0.9 from origin o.
func claim(uid string, o Origin, tunnel TunnelProtocol, proven bool) *Workload {
	w := wl(uid, false, "10.0.0.9")
	w.Node, w.Origin, w.Tunnel, w.AddressProven = uid, o, tunnel, proven
	return w
}

// The address contest (contest.go): names never decide; origin, proof and
// an established owner do; otherwise no one gets the address.
func TestAddressContest(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.9")
	hb, plain := TunnelHBONE, TunnelNone
	for _, tc := range []struct {
		name     string
		claims   []*Workload
		held     string // the owner in the previous snapshot
		want     string // "" : contested
		reason   string // of the first loser
		previous []*Workload
	}{
		{name: "local beats gossip", claims: []*Workload{claim("0", OriginGossip, hb, true), func() *Workload {
			w := claim("victim", OriginConfig, hb, false)
			w.Local = true
			return w
		}()}, want: "victim", reason: ContestOutranked},
		{name: "istiod beats a proven gossip claim", claims: []*Workload{claim("0", OriginGossip, hb, true), claim("k8s", OriginIstiod, hb, false)},
			want: "k8s", reason: ContestOutranked},
		{name: "static config beats istiod", claims: []*Workload{claim("k8s", OriginIstiod, hb, false), claim("static", OriginConfig, hb, false)},
			want: "static", reason: ContestOutranked},
		{name: "proven beats unproven", claims: []*Workload{claim("0", OriginGossip, hb, false), claim("z", OriginGossip, hb, true)},
			want: "z", reason: ContestOutranked},
		{name: "signed and unsigned (an upgrade): no one with no history", claims: []*Workload{claim("0", OriginGossip, hb, false), claim("z", OriginUnsigned, hb, false)},
			want: "", reason: ContestUnresolved},
		{name: "signed and unsigned: the established one keeps it", claims: []*Workload{claim("0", OriginGossip, hb, false), claim("z", OriginUnsigned, hb, false)},
			held: "z", want: "z", reason: ContestEstablished},
		{name: "a proof beats an unsigned claim", claims: []*Workload{claim("0", OriginUnsigned, hb, false), claim("z", OriginGossip, hb, true)},
			want: "z", reason: ContestOutranked},
		{name: "two unproven, none established: no one", claims: []*Workload{claim("0", OriginGossip, hb, false), claim("z", OriginGossip, hb, false)},
			want: "", reason: ContestUnresolved},
		{name: "the established owner keeps it", claims: []*Workload{claim("0", OriginGossip, hb, false), claim("z", OriginGossip, hb, false)},
			held: "z", want: "z", reason: ContestEstablished},
		{name: "two proven, the established keeps it", claims: []*Workload{claim("0", OriginGossip, hb, true), claim("z", OriginGossip, hb, true)},
			held: "z", want: "z", reason: ContestEstablished},
		{name: "an established unproven owner loses to a proof", claims: []*Workload{claim("0", OriginGossip, hb, true), claim("z", OriginGossip, hb, false)},
			held: "z", want: "0", reason: ContestOutranked},
		{name: "plaintext never takes an HBONE address", claims: []*Workload{claim("0", OriginGossip, plain, true), claim("z", OriginGossip, hb, false)},
			want: "z", reason: ContestDowngrade},
		{name: "plaintext loses even when established", claims: []*Workload{claim("0", OriginGossip, plain, false), claim("z", OriginGossip, hb, false)},
			held: "0", want: "z", reason: ContestDowngrade},
		{name: "istiod plaintext is istiod's word", claims: []*Workload{claim("k8s", OriginIstiod, plain, false), claim("z", OriginGossip, hb, true)},
			want: "k8s", reason: ContestOutranked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var prev *Snapshot
			if tc.held != "" {
				for _, w := range tc.claims {
					if w.UID == tc.held {
						prev = NewSnapshot(1, []*Workload{w})
					}
				}
			}
			for _, order := range [][]*Workload{tc.claims, {tc.claims[1], tc.claims[0]}} {
				s := Build(2, Input{Workloads: order, Previous: prev})
				w, ok := s.WorkloadByAddr(a)
				switch {
				case tc.want == "" && (ok || !s.Contested(a)):
					t.Errorf("got %v, contested %v; want no one", w, s.Contested(a))
				case tc.want != "" && (!ok || w.UID != tc.want || s.Contested(a)):
					t.Errorf("got %v; want %s", w, tc.want)
				}
				if cs := s.Conflicts(); len(cs) == 0 || cs[0].Reason != tc.reason || cs[0].Winner != tc.want {
					t.Errorf("conflicts %v; want a loser for %q, winner %q", cs, tc.reason, tc.want)
				}
			}
		})
	}
}

func TestStorePublishAndSubscribe(t *testing.T) {
	st := NewStore(Input{})
	ch := st.Subscribe()
	if !st.Publish(NewSnapshot(2, nil)) || !st.Publish(NewSnapshot(3, nil)) {
		t.Fatal("newer snapshots rejected")
	}
	if st.Publish(NewSnapshot(2, nil)) || st.Load().Version() != 3 {
		t.Fatal("an older snapshot replaced a newer one")
	}
	select {
	case <-ch:
	default:
		t.Fatal("subscriber not woken")
	}
	select {
	case <-ch:
		t.Fatal("subscriber woken twice for coalesced publishes")
	default:
	}
}

// Rebuild numbers the snapshots itself, hands assemble the current one, and
// reports each change in order with the snapshot it replaced.
func TestStoreRebuildVersionsItsSnapshots(t *testing.T) {
	st := NewStore(Input{})
	var reported []uint64
	for i := range 3 {
		st.Rebuild(func(current *Snapshot) Input {
			if current != st.Load() {
				t.Fatal("assemble got another snapshot than the current one")
			}
			return Input{Workloads: []*Workload{{UID: fmt.Sprint("n/ns/w", i), Name: "w", Namespace: "ns", Node: "n"}}}
		}, func(current, next *Snapshot) {
			if next.Version() != current.Version()+1 || st.Load() != next {
				t.Errorf("reported %d -> %d, current %d", current.Version(), next.Version(), st.Load().Version())
			}
			reported = append(reported, next.Version())
		})
	}
	if fmt.Sprint(reported) != "[2 3 4]" || len(st.Load().Workloads()) != 1 {
		t.Errorf("versions %v, workloads %d: want [2 3 4] and the last input's one", reported, len(st.Load().Workloads()))
	}
}

func TestFromConfig(t *testing.T) {
	cfg, err := config.Parse("t.toml", []byte(`
[node]
name = "vm-1"
trust_domain = "example.org"
[[workload]]
name = "web"
namespace = "shop"
service_account = "web-sa"
addresses = ["10.0.0.1"]
[[remote_workload]]
name = "db"
addresses = ["10.0.0.2"]
node = "vm-2"
tunnel = "none"
`))
	if err != nil {
		t.Fatal(err)
	}
	s := NewSnapshot(1, FromConfig(cfg))
	web, ok := s.LocalByAddr(netip.MustParseAddr("10.0.0.1"))
	if !ok || web.UID != "vm-1/shop/web" || web.Tunnel != TunnelHBONE {
		t.Fatalf("local workload wrong: %+v", web)
	}
	id, err := web.Identity()
	if err != nil || id.String() != "spiffe://example.org/ns/shop/sa/web-sa" {
		t.Errorf("Identity() = %v, %v", id, err)
	}
	db, ok := s.WorkloadByAddr(netip.MustParseAddr("10.0.0.2"))
	if !ok || db.Local || db.Tunnel != TunnelNone || db.Node != "vm-2" {
		t.Errorf("remote workload wrong: %+v", db)
	}
}

// Workloads of one node that list their ports share an address: each port
// finds its workload, SNI finds a local one, and the first declared is the
// address's primary; without ports, sharing is a conflict.
func TestSharedAddress(t *testing.T) {
	alice, bob := wl("n/default/alice", true, "10.0.0.1"), wl("n/default/bob", true, "10.0.0.1")
	alice.Name, bob.Name = "alice", "bob"
	alice.Node, bob.Node = "n", "n"
	alice.Ports, bob.Ports = []uint16{8081}, []uint16{8082}
	MarkPrimaries([]*Workload{bob, alice}) // bob is declared first
	s := NewSnapshot(1, []*Workload{alice, bob})
	if len(s.Conflicts()) != 0 {
		t.Fatalf("sharing reported as a conflict: %v", s.Conflicts())
	}
	for port, want := range map[uint16]string{8081: "alice", 8082: "bob", 9999: "bob"} {
		if w, ok := s.LocalFor(netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port)); !ok || w.Name != want {
			t.Errorf("port %d: %v, want %s", port, w, want)
		}
	}
	if w, ok := s.LocalByServerName(netip.MustParseAddr("10.0.0.1"), "alice.default.workload.ambient-agent"); !ok || w != alice {
		t.Errorf("SNI of alice: %v %v", w, ok)
	}
	if _, ok := s.LocalByServerName(netip.MustParseAddr("10.0.0.2"), "alice.default.workload.ambient-agent"); ok {
		t.Error("SNI matched on another address")
	}
	plain := wl("n/default/carol", true, "10.0.0.1")
	plain.Node = "n"
	if s := NewSnapshot(2, []*Workload{alice, bob, plain}); len(s.Conflicts()) == 0 {
		t.Error("a workload without ports on a shared address is not a conflict")
	}
}

// Addresses are a network's: a workload of another network at the same address neither contests it nor is
// found by it here, and still backs its services (Istio keys workloads by network and address).
func TestOverlappingAddressesAcrossNetworks(t *testing.T) {
	here, there := claim("vm-a/default/x", OriginGossip, TunnelHBONE, true), claim("vm-b/default/x", OriginGossip, TunnelHBONE, true)
	here.Network, there.Network = "net-a", "net-b"
	here.Healthy, there.Healthy = true, true
	in := Input{Workloads: []*Workload{here, there}, Network: "net-a", Limits: meshLimits,
		Services: []ServiceDecl{decl("vm-a", "x", here.UID), decl("vm-b", "x", there.UID)}}
	s := Build(1, in)
	if got, ok := s.WorkloadByAddr(netip.MustParseAddr("10.0.0.9")); !ok || got != here {
		t.Fatalf("10.0.0.9 on net-a = %v, %v; want net-a's workload", got, ok)
	}
	if len(s.Conflicts()) != 0 || s.Contested(netip.MustParseAddr("10.0.0.9")) {
		t.Errorf("workloads of two networks contest one address: %v", s.Conflicts())
	}
	if w, ok := s.WorkloadByUID(there.UID); !ok || w != there {
		t.Error("the other network's workload is not known by UID")
	}
	if svc, ok := s.ServiceByHostname("x.default.svc.cluster.local"); !ok || len(svc.Endpoints) != 2 {
		t.Errorf("service x should have an endpoint on each network: %+v", svc)
	}
	// Telemetry finds each by its network's address.
	if w, _ := s.WorkloadOn("net-b", netip.MustParseAddr("10.0.0.9")); w != there {
		t.Errorf("WorkloadOn(net-b) = %v, want net-b's workload", w)
	}
	if w, _ := s.WorkloadOn("net-a", netip.MustParseAddr("10.0.0.9")); w != here {
		t.Errorf("WorkloadOn(net-a) = %v, want net-a's workload", w)
	}
	if _, ok := s.WorkloadOn("net-c", netip.MustParseAddr("10.0.0.9")); ok {
		t.Error("WorkloadOn(net-c) found a workload")
	}
	// From net-b, the address is net-b's workload.
	in.Network = "net-b"
	if got, _ := Build(2, in).WorkloadByAddr(netip.MustParseAddr("10.0.0.9")); got != there {
		t.Errorf("10.0.0.9 on net-b = %v; want net-b's workload", got)
	}
	// On one flat network (no network here), the two claims contest the address as before.
	in.Network = ""
	if s := Build(3, in); len(s.Conflicts()) == 0 {
		t.Error("a host without a network saw no contest for one address claimed twice")
	}
}
