package state

import (
	"net/netip"
	"strings"
	"testing"
)

// decl is a service declaration a peer published by gossip.
func decl(node, name string, uids ...string) ServiceDecl {
	return ServiceDecl{Node: node, Name: name, Namespace: "default", Hostname: name + ".default.svc.cluster.local",
		Ports: []ServicePort{{Port: 9080, TargetPort: 8080}}, Workloads: uids, Origin: OriginGossip}
}

// meshLimits are the default [dns] domains.
var meshLimits = Limits{Domains: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}}

func TestServicesMergeAcrossNodes(t *testing.T) {
	a, b := wl("vm-1/default/r1", false, "10.0.0.1"), wl("vm-2/default/r2", false, "10.0.0.2")
	a.Healthy, b.Healthy = true, true
	in := Input{Workloads: []*Workload{a, b}, Services: []ServiceDecl{
		decl("vm-2", "reviews", "vm-2/default/r2"), decl("vm-1", "reviews", "vm-1/default/r1", "vm-1/default/gone"),
	}, Limits: meshLimits}
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
	s := Build(1, Input{Services: []ServiceDecl{explicit, decl("vm-1", "b")}, Limits: meshLimits})
	b, _ := s.ServiceByHostname("b.default.svc.cluster.local")
	if len(b.Addresses) != 1 || b.Addresses[0] == first {
		t.Fatalf("b kept a taken VIP: %v", b.Addresses)
	}
	if len(s.ServiceConflicts()) != 1 || !strings.Contains(s.ServiceConflicts()[0].String(), "collides with service default/a") {
		t.Errorf("collision not reported: %v", s.ServiceConflicts())
	}
	// An explicit VIP that is a workload's address is refused, not shared.
	c := decl("vm-1", "c")
	c.VIPs, c.Origin, c.Local = []netip.Addr{netip.MustParseAddr("10.0.0.1")}, OriginConfig, true
	w := wl("w", false, "10.0.0.1")
	w.Origin = OriginConfig // [[remote_workload]]: as trusted as the service
	s = Build(1, Input{Workloads: []*Workload{w}, Services: []ServiceDecl{c}})
	if svc, _ := s.ServiceByHostname("c.default.svc.cluster.local"); len(svc.Addresses) != 0 || len(s.ServiceConflicts()) != 1 {
		t.Errorf("VIP shared with a workload: %v, %v", svc.Addresses, s.ServiceConflicts())
	}
}

// Two peers that declare one service differently, with no history: neither
// defines it (names never decide). Once one definition is established, a
// differing newcomer is a conflict and the established one stays.
func TestDifferentDefinitionsConflict(t *testing.T) {
	a, b := decl("vm-1", "r"), decl("vm-2", "r")
	b.Hostname = "other.cluster.local"
	s := Build(1, Input{Services: []ServiceDecl{b, a}, Limits: meshLimits})
	if len(s.Services()) != 0 || len(s.ServiceConflicts()) != 2 || s.ServiceConflicts()[0].What != declContested {
		t.Errorf("fresh disagreeing declarations: services %v, conflicts %v; want none and two contested", s.Services(), s.ServiceConflicts())
	}
	established := Build(1, Input{Services: []ServiceDecl{a}, Limits: meshLimits})
	s = Build(2, Input{Services: []ServiceDecl{b, a}, Limits: meshLimits, Previous: established})
	if svc, ok := s.ServiceByHostname("r.default.svc.cluster.local"); !ok || svc.Nodes[0] != "vm-1" {
		t.Fatalf("established definition lost: %v", s.Services())
	}
	if _, ok := s.ServiceByHostname("other.cluster.local"); ok {
		t.Error("the newcomer's hostname is answered")
	}
	if cs := s.ServiceConflicts(); len(cs) != 1 || cs[0].Loser != "vm-2" || cs[0].What != declDiffers {
		t.Errorf("conflicts = %v, want vm-2's differing declaration", cs)
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
	svc, _ := Build(1, Input{Workloads: []*Workload{h1, h2, sick, noPort}, Services: []ServiceDecl{d, other}, Limits: meshLimits}).ServiceByHostname("r.default.svc.cluster.local")
	counts := map[string]int{}
	for i := range 4 {
		e, target, ok := PickEndpoint(svc, 9080, nil, func(n int) int { return i % n })
		if !ok || target != 8080 {
			t.Fatalf("pick %d: %v %d %v", i, e, target, ok)
		}
		counts[e.UID]++
	}
	if counts["h1"] != 1 || counts["h2"] != 3 {
		t.Errorf("capacity weights not honoured: %v", counts)
	}
	h1.Healthy, h2.Healthy = false, false
	if e, _, ok := PickEndpoint(svc, 9080, nil, nil); ok {
		t.Errorf("picked %s with no healthy endpoint", e.UID)
	}
	if _, _, ok := PickEndpoint(svc, 1234, nil, nil); ok {
		t.Error("picked an endpoint for a port the service does not have")
	}
}

// A workload or service uses only the waypoint its own declaration names:
// nothing is bound by namespace or service account.
func TestWaypointResolution(t *testing.T) {
	ns := &Waypoint{Name: "ns-wp", Namespace: "default", ServiceAccount: "wp", TrustDomain: "cluster.local", Node: "w1",
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.50")}, Origin: OriginGossip}
	sa := &Waypoint{Name: "sa-wp", Namespace: "default", ServiceAccount: "wp2", TrustDomain: "cluster.local", Node: "w2",
		ForServiceAccount: "reviews", Origin: OriginGossip}
	w := wl("r", false, "10.0.0.1")
	w.Tunnel = TunnelHBONE
	w.ServiceAccount = "reviews"
	plain := wl("p", false, "10.0.0.3")
	plain.UseWaypoint = "ns-wp"
	s := Build(1, Input{Workloads: []*Workload{w, plain}, Waypoints: []*Waypoint{ns, sa}})
	if got := s.WaypointOf(w); got != nil {
		t.Errorf("a workload that names no waypoint got %v", got)
	}
	if got := s.WaypointOf(plain); got != nil {
		t.Errorf("an uncaptured workload has no waypoint: %v", got)
	}
	w.UseWaypoint = "none"
	if got := s.WaypointOf(w); got != nil {
		t.Errorf("opted-out workload got %v", got)
	}
	for _, ref := range []string{"sa-wp", "default/sa-wp"} {
		w.UseWaypoint = ref
		if got := s.WaypointOf(w); len(got) != 1 || got[0] != sa {
			t.Errorf("use_waypoint %q: got %v", ref, got)
		}
	}
	w.UseWaypoint = "other/sa-wp"
	if got := s.WaypointOf(w); got != nil {
		t.Errorf("a waypoint of another namespace by that name: %v", got)
	}
	svc := &Service{Name: "r", Namespace: "default"}
	if got := s.ServiceWaypoint(svc); got != nil {
		t.Errorf("a service that names no waypoint got %v", got)
	}
	svc.UseWaypoint = "ns-wp"
	if got := s.ServiceWaypoint(svc); len(got) != 1 || got[0] != ns {
		t.Errorf("service waypoint: %v", got)
	}
	if got, ok := s.WaypointByAddr(netip.MustParseAddr("10.0.0.50")); !ok || got != ns {
		t.Errorf("WaypointByAddr = %v", got)
	}
}

// The host's own configuration outranks istiod, and istiod outranks gossip,
// for VIPs, hostnames and definitions, whatever the keys and node names.
// Gossip services among themselves: an established holder keeps a VIP; with
// no history, a contested VIP goes to no one.
func TestOriginsOutrankGossip(t *testing.T) {
	vip := netip.MustParseAddr("10.96.0.10")
	lim := Limits{Domains: []string{"example.com"}, VIPs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}}
	istiod := decl(IstiodNode, "zzz")
	istiod.VIPs, istiod.Hostname, istiod.Origin = []netip.Addr{vip}, "web.example.com", OriginIstiod
	web := decl("0", "aaa")
	web.VIPs, web.Hostname = []netip.Addr{vip}, "web.example.com"
	for _, origin := range []Origin{OriginConfig, OriginGossip} {
		web.Origin, web.Local = origin, origin == OriginConfig
		want := map[Origin]string{OriginConfig: "default/aaa", OriginGossip: "default/zzz"}[origin]
		s := Build(1, Input{Services: []ServiceDecl{istiod, web}, Limits: lim})
		if got, ok := s.ServiceByVIP(vip); !ok || got.Key() != want {
			t.Errorf("%s: VIP %s is %v's, want %s's", origin, vip, got, want)
		}
		if got, ok := s.ServiceByHostname("web.example.com"); !ok || got.Key() != want {
			t.Errorf("%s: hostname is %v's, want %s's", origin, got, want)
		}
		if len(s.ServiceConflicts()) != 2 {
			t.Errorf("%s: conflicts not all reported: %v", origin, s.ServiceConflicts())
		}
	}
	// One service (same namespace/name) from istiod and from gossip: istiod defines it.
	same := decl("0", "shared")
	same.VIPs = []netip.Addr{netip.MustParseAddr("10.96.0.20")}
	fromIstiod := decl(IstiodNode, "shared")
	fromIstiod.VIPs, fromIstiod.Origin = []netip.Addr{netip.MustParseAddr("10.96.0.21")}, OriginIstiod
	s := Build(1, Input{Services: []ServiceDecl{same, fromIstiod}, Limits: lim})
	if got, ok := s.ServiceByVIP(fromIstiod.VIPs[0]); !ok || got.Key() != "default/shared" {
		t.Errorf("istiod's VIP is %v's, want default/shared's", got)
	}
	if _, ok := s.ServiceByVIP(same.VIPs[0]); ok {
		t.Error("the gossip declaration's VIP is routed")
	}
	// Two gossip services on one VIP: no one with no history, the holder after.
	other := decl("vm-2", "bbb")
	other.VIPs, other.Hostname = []netip.Addr{vip}, "other.example.com"
	web.Origin, web.Local = OriginGossip, false
	fresh := Build(1, Input{Services: []ServiceDecl{web, other}, Limits: lim})
	if got, ok := fresh.ServiceByVIP(vip); ok {
		t.Errorf("a contested VIP went to %s", got.Key())
	}
	held := Build(1, Input{Services: []ServiceDecl{other}, Limits: lim})
	if got, _ := Build(2, Input{Services: []ServiceDecl{web, other}, Limits: lim, Previous: held}).ServiceByVIP(vip); got == nil || got.Key() != "default/bbb" {
		t.Errorf("VIP is %v's, want the established default/bbb's", got)
	}
}

// TestKubernetesStyle: a hostname is of the <name>.<namespace>.svc.<domain> form when a label past its first is
// "svc".
func TestKubernetesStyle(t *testing.T) {
	for host, want := range map[string]bool{
		"a.ns.svc.cluster.local": true, "a.svc": true, "a..svc": true, "a.ns.svc": true,
		"svc.example.org": false, "svc": false, "a": false, "": false, "a.svcs.example": false, "a.ns.svc2.local": false,
	} {
		if got := kubernetesStyle(host); got != want {
			t.Errorf("kubernetesStyle(%q) = %v, want %v", host, got, want)
		}
	}
}
