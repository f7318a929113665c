package state

import (
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

func TestConflictsAreDeterministic(t *testing.T) {
	for _, order := range [][]*Workload{
		{wl("x", false, "10.0.0.9"), wl("y", false, "10.0.0.9"), wl("z", true, "10.0.0.8")},
		{wl("z", true, "10.0.0.8"), wl("y", false, "10.0.0.9"), wl("x", false, "10.0.0.9")},
	} {
		s := NewSnapshot(1, order)
		w, _ := s.WorkloadByAddr(netip.MustParseAddr("10.0.0.9"))
		if w.UID != "x" || len(s.Conflicts()) != 1 || s.Conflicts()[0].Loser != "y" {
			t.Errorf("winner %s, conflicts %v; want x over y", w.UID, s.Conflicts())
		}
	}
	s := NewSnapshot(1, []*Workload{wl("a", false, "10.0.0.9"), wl("z", true, "10.0.0.9")})
	if w, _ := s.WorkloadByAddr(netip.MustParseAddr("10.0.0.9")); w.UID != "z" {
		t.Errorf("a local workload must win its own address, got %s", w.UID)
	}
}

func TestStorePublishAndSubscribe(t *testing.T) {
	st := NewStore(NewSnapshot(1, nil))
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
