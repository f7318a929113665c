package state

import (
	"net/netip"
	"strings"
	"testing"
)

func decl(node, name string, uids ...string) ServiceDecl {
	return ServiceDecl{Node: node, Name: name, Namespace: "default", Hostname: name + ".default.svc.cluster.local",
		Ports: []ServicePort{{Port: 9080, TargetPort: 8080}}, Workloads: uids}
}

func TestServicesMergeAcrossNodes(t *testing.T) {
	a, b := wl("vm-1/default/r1", false, "10.0.0.1"), wl("vm-2/default/r2", false, "10.0.0.2")
	a.Healthy, b.Healthy = true, true
	in := Input{Workloads: []*Workload{a, b}, Services: []ServiceDecl{
		decl("vm-2", "reviews", "vm-2/default/r2"), decl("vm-1", "reviews", "vm-1/default/r1", "vm-1/default/gone"),
	}}
	s := Build(1, in)
	svc, ok := s.ServiceByHostname("reviews.default.svc.cluster.local")
	if !ok || len(svc.Endpoints) != 2 || strings.Join(svc.Nodes, ",") != "vm-1,vm-2" {
		t.Fatalf("merged service wrong: %+v", svc)
	}
	if len(svc.Addresses) != 1 || !svc.Allocated || !IsAllocated(svc.Addresses[0]) {
		t.Fatalf("VIP not allocated from 240.240.0.0/16: %v", svc.Addresses)
	}
	if got, _ := s.ServiceByVIP(svc.Addresses[0]); got != svc {
		t.Error("ServiceByVIP does not find the allocated VIP")
	}
	// Every agent computes the same VIP, whatever the order it learned things in.
	in.Services[0], in.Services[1] = in.Services[1], in.Services[0]
	if other, _ := Build(2, in).ServiceByHostname(svc.Hostname); other.Addresses[0] != svc.Addresses[0] {
		t.Errorf("VIP depends on input order: %v vs %v", other.Addresses, svc.Addresses)
	}
}

func TestVIPCollisionsAreReported(t *testing.T) {
	first := allocAddr(allocOffset("b.default.svc.cluster.local"), false)
	explicit := decl("vm-1", "a")
	explicit.VIPs = []netip.Addr{first}
	s := Build(1, Input{Services: []ServiceDecl{explicit, decl("vm-1", "b")}})
	b, _ := s.ServiceByHostname("b.default.svc.cluster.local")
	if len(b.Addresses) != 1 || b.Addresses[0] == first {
		t.Fatalf("b kept a taken VIP: %v", b.Addresses)
	}
	if len(s.ServiceConflicts()) != 1 || !strings.Contains(s.ServiceConflicts()[0].String(), "collides with service default/a") {
		t.Errorf("collision not reported: %v", s.ServiceConflicts())
	}
	// An explicit VIP that is a workload's address is refused, not shared.
	c := decl("vm-1", "c")
	c.VIPs = []netip.Addr{netip.MustParseAddr("10.0.0.1")}
	s = Build(1, Input{Workloads: []*Workload{wl("w", false, "10.0.0.1")}, Services: []ServiceDecl{c}})
	if svc, _ := s.ServiceByHostname("c.default.svc.cluster.local"); len(svc.Addresses) != 0 || len(s.ServiceConflicts()) != 1 {
		t.Errorf("VIP shared with a workload: %v, %v", svc.Addresses, s.ServiceConflicts())
	}
}

func TestDifferentDefinitionsConflict(t *testing.T) {
	a, b := decl("vm-1", "r"), decl("vm-2", "r")
	b.Hostname = "other.example.com"
	s := Build(1, Input{Services: []ServiceDecl{b, a}})
	if svc, _ := s.ServiceByHostname("r.default.svc.cluster.local"); svc == nil || len(s.ServiceConflicts()) != 1 ||
		s.ServiceConflicts()[0].Winner != "vm-1" {
		t.Errorf("conflict not resolved to vm-1: %v", s.ServiceConflicts())
	}
}

func TestPickEndpoint(t *testing.T) {
	h1, h2, sick := wl("h1", false, "10.0.0.1"), wl("h2", false, "10.0.0.2"), wl("sick", false, "10.0.0.3")
	h1.Healthy, h2.Healthy, h1.Capacity, h2.Capacity = true, true, 1, 3
	noPort := wl("np", false, "10.0.0.4")
	noPort.Healthy = true
	d := decl("vm-1", "r", "h1", "h2", "sick")
	other := decl("vm-1", "r", "np")
	other.Ports = []ServicePort{{Port: 1, TargetPort: 1}}
	svc, _ := Build(1, Input{Workloads: []*Workload{h1, h2, sick, noPort}, Services: []ServiceDecl{d, other}}).ServiceByHostname("r.default.svc.cluster.local")
	counts := map[string]int{}
	for i := range 4 {
		e, target, ok := PickEndpoint(svc, 9080, func(n int) int { return i % n })
		if !ok || target != 8080 {
			t.Fatalf("pick %d: %v %d %v", i, e, target, ok)
		}
		counts[e.UID]++
	}
	if counts["h1"] != 1 || counts["h2"] != 3 {
		t.Errorf("capacity weights not honoured: %v", counts)
	}
	h1.Healthy, h2.Healthy = false, false
	if e, _, ok := PickEndpoint(svc, 9080, nil); ok {
		t.Errorf("picked %s with no healthy endpoint", e.UID)
	}
	if _, _, ok := PickEndpoint(svc, 1234, nil); ok {
		t.Error("picked an endpoint for a port the service does not have")
	}
}

func TestWaypointResolution(t *testing.T) {
	ns := &Waypoint{Name: "ns-wp", Namespace: "default", ServiceAccount: "wp", TrustDomain: "cluster.local", Node: "w1",
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.50")}}
	sa := &Waypoint{Name: "sa-wp", Namespace: "default", ServiceAccount: "wp2", TrustDomain: "cluster.local", Node: "w2",
		ForServiceAccount: "reviews"}
	w := wl("r", false, "10.0.0.1")
	w.Tunnel = TunnelHBONE
	w.ServiceAccount = "reviews"
	other := wl("o", false, "10.0.0.2")
	other.Tunnel = TunnelHBONE
	plain := wl("p", false, "10.0.0.3")
	s := Build(1, Input{Workloads: []*Workload{w, other, plain}, Waypoints: []*Waypoint{ns, sa}})
	if got := s.WaypointOf(w); len(got) != 1 || got[0] != sa {
		t.Errorf("service-account waypoint must win: %v", got)
	}
	if got := s.WaypointOf(other); len(got) != 1 || got[0] != ns {
		t.Errorf("namespace waypoint expected: %v", got)
	}
	if got := s.WaypointOf(plain); got != nil {
		t.Errorf("an uncaptured workload has no waypoint: %v", got)
	}
	w.UseWaypoint = "none"
	if got := s.WaypointOf(w); got != nil {
		t.Errorf("opted-out workload got %v", got)
	}
	w.UseWaypoint = "default/ns-wp"
	if got := s.WaypointOf(w); len(got) != 1 || got[0] != ns {
		t.Errorf("named waypoint not used: %v", got)
	}
	svc := &Service{Name: "r", Namespace: "default"}
	if got := s.ServiceWaypoint(svc); len(got) != 1 || got[0] != ns {
		t.Errorf("service waypoint is the namespace one: %v", got)
	}
	if got, ok := s.WaypointByAddr(netip.MustParseAddr("10.0.0.50")); !ok || got != ns {
		t.Errorf("WaypointByAddr = %v", got)
	}
}

// A service of the mesh's nodes keeps its VIPs and hostname against istiod's
// services, whatever their keys: a Kubernetes ClusterIP that overlaps a
// [[service]] VIP does not take it over. The mesh's services among themselves
// stay in key order, so the host that declares one and its peers agree.
func TestMeshServicesWinOverIstiod(t *testing.T) {
	vip := netip.MustParseAddr("10.96.0.10")
	istiod := decl(IstiodNode, "aaa")
	istiod.VIPs, istiod.Hostname = []netip.Addr{vip}, "web.example.com"
	istiodAuto := decl(IstiodNode, "aab")
	istiodAuto.Hostname = "auto.example.com"
	web := decl("vm-1", "web")
	web.VIPs, web.Hostname = []netip.Addr{vip}, "web.example.com"
	auto := decl("vm-1", "zzz")
	auto.Hostname = "auto.example.com"
	for _, local := range []bool{true, false} { // on vm-1 itself, and on a peer that learned web by gossip
		web.Local, auto.Local = local, local
		s := Build(1, Input{Services: []ServiceDecl{istiod, istiodAuto, web, auto}})
		if got, ok := s.ServiceByVIP(vip); !ok || got.Key() != "default/web" {
			t.Errorf("local=%v: VIP %s is %v's, want default/web's", local, vip, got)
		}
		if got, ok := s.ServiceByHostname("web.example.com"); !ok || got.Key() != "default/web" {
			t.Errorf("local=%v: hostname is %v's, want default/web's", local, got)
		}
		want := allocAddr(allocOffset("auto.example.com"), false)
		if got, ok := s.ServiceByVIP(want); !ok || got.Key() != "default/zzz" {
			t.Errorf("local=%v: allocated VIP %s is %v's, want default/zzz's", local, want, got)
		}
		for _, c := range s.ServiceConflicts() {
			if c.Loser != "default/aaa" && c.Loser != "default/aab" {
				t.Errorf("local=%v: a mesh service lost: %v", local, c)
			}
		}
		if len(s.ServiceConflicts()) != 4 {
			t.Errorf("local=%v: conflicts not all reported: %v", local, s.ServiceConflicts())
		}
	}
	// One service (same namespace/name) declared by istiod and by a host named
	// that sorts after "istiod": the host's definition (its VIP) wins.
	same := decl("vm-1", "shared")
	same.VIPs = []netip.Addr{netip.MustParseAddr("10.96.0.20")}
	fromIstiod := decl(IstiodNode, "shared")
	fromIstiod.VIPs = []netip.Addr{netip.MustParseAddr("10.96.0.21")}
	if got, ok := Build(1, Input{Services: []ServiceDecl{fromIstiod, same}}).ServiceByVIP(same.VIPs[0]); !ok || got.Key() != "default/shared" {
		t.Errorf("same service from istiod and vm-1: vm-1's VIP is %v's, want default/shared's", got)
	}
	// Two nodes' services on one VIP: the key decides, on either node.
	other := decl("vm-2", "aaa")
	other.VIPs = []netip.Addr{vip}
	for _, local := range []bool{true, false} {
		web.Local, other.Local = local, !local
		if got, _ := Build(1, Input{Services: []ServiceDecl{web, other}}).ServiceByVIP(vip); got.Key() != "default/aaa" {
			t.Errorf("vm-1 local=%v: VIP is %v's, want default/aaa's on every agent", local, got)
		}
	}
}
