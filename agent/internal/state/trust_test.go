package state

import (
	"net/netip"
	"testing"
)

// gossipWorkload is a peer's signed workload in namespace ns with service account sa.
func gossipWorkload(node, ns, sa, addr string) *Workload {
	w := wl(node+"/"+ns+"/"+sa, false, addr)
	w.Node, w.Namespace, w.ServiceAccount, w.Origin, w.Tunnel, w.Healthy = node, ns, sa, OriginGossip, TunnelHBONE, true
	return w
}

// A workload backs only services of its own namespace, with a service
// account the established definition allows; hostnames and VIPs of gossip
// stay within the mesh's domains and the allowed ranges.
func TestGossipServiceRules(t *testing.T) {
	web1 := gossipWorkload("web-1", "default", "reviews", "10.0.0.1")
	web2 := gossipWorkload("web-2", "default", "reviews", "10.0.0.2")
	rogue := gossipWorkload("0", "default", "x", "10.0.0.66")
	outsider := gossipWorkload("0", "evil", "x", "10.0.0.67")
	ws := []*Workload{web1, web2, rogue, outsider}
	reviews := func(node string, w *Workload) ServiceDecl { return decl(node, "reviews", w.UID) }
	established := Build(1, Input{Workloads: ws, Services: []ServiceDecl{reviews("web-1", web1), reviews("web-2", web2)}, Limits: meshLimits})
	if svc, ok := established.ServiceByHostname("reviews.default.svc.cluster.local"); !ok || len(svc.Endpoints) != 2 {
		t.Fatalf("two agreeing hosts: %v", established.Services())
	}

	other := func(mut func(*ServiceDecl)) ServiceDecl {
		d := reviews("0", rogue)
		mut(&d)
		return d
	}
	for _, tc := range []struct {
		name string
		d    ServiceDecl
		what string
	}{
		{"another service account joins", other(func(*ServiceDecl) {}), declServiceAccount},
		{"another service account widens the list for itself", other(func(d *ServiceDecl) { d.ServiceAccounts = []string{"x", "reviews"} }), declServiceAccount},
		{"a new waypoint", other(func(d *ServiceDecl) { d.UseWaypoint = "evil-wp" }), declDiffers},
		{"another namespace's workload", other(func(d *ServiceDecl) { d.Workloads = []string{outsider.UID} }), declOtherNamespace},
		{"the metadata VIP", other(func(d *ServiceDecl) { d.VIPs = []netip.Addr{netip.MustParseAddr("169.254.169.254")} }), declVIP},
		{"an off-range VIP", other(func(d *ServiceDecl) { d.VIPs = []netip.Addr{netip.MustParseAddr("10.1.2.3")} }), declVIP},
		{"an off-mesh hostname", other(func(d *ServiceDecl) { d.Hostname = "db.corp.example.com" }), declHostname},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{Workloads: ws, Services: []ServiceDecl{reviews("web-1", web1), reviews("web-2", web2), tc.d},
				Limits: meshLimits, Previous: established}
			s := Build(2, in)
			svc, ok := s.ServiceByHostname("reviews.default.svc.cluster.local")
			if !ok || len(svc.Endpoints) != 2 || svc.UseWaypoint != "" || len(svc.Addresses) != 1 || !IsAllocated(svc.Addresses[0]) {
				t.Fatalf("the service changed: %+v", svc)
			}
			for _, e := range svc.Endpoints {
				if e.Workload.Node == "0" {
					t.Errorf("the rogue's workload is an endpoint")
				}
			}
			if _, ok := s.ServiceByHostname("db.corp.example.com"); ok {
				t.Error("an off-mesh hostname is answered")
			}
			if cs := s.ServiceConflicts(); len(cs) != 1 || cs[0].Loser != "0" || cs[0].What != tc.what {
				t.Errorf("conflicts %v; want the rogue's declaration refused for %q", cs, tc.what)
			}
		})
	}
	// The service's own declarations may widen it: then a new service account joins.
	wide := reviews("web-1", web1)
	wide.ServiceAccounts = []string{"x"}
	wide2 := reviews("web-2", web2)
	wide2.ServiceAccounts = []string{"x"}
	s := Build(2, Input{Workloads: ws, Services: []ServiceDecl{wide, wide2, reviews("0", rogue)}, Limits: meshLimits, Previous: established})
	if cs := s.ServiceConflicts(); len(cs) != 0 {
		t.Errorf("conflicts %v", cs)
	}
	if svc, _ := s.ServiceByHostname("reviews.default.svc.cluster.local"); svc == nil || len(svc.ServiceAccounts) != 2 || len(svc.Endpoints) != 3 {
		t.Errorf("the owners' explicit list was not applied: %+v", svc)
	}
}

// A waypoint's name is bound to the identity that established it: a
// newcomer with the same name and another identity is a conflict.
func TestWaypointNameBinding(t *testing.T) {
	wp := func(node, sa string, o Origin) *Waypoint {
		return &Waypoint{Name: "waypoint", Namespace: "prod", ServiceAccount: sa, TrustDomain: "cluster.local", Node: node,
			Origin: o, Addresses: []netip.Addr{netip.MustParseAddr("10.0.1." + map[string]string{"wp-1": "1", "wp-2": "2", "0": "66"}[node])}}
	}
	honest, second, rogue := wp("wp-1", "waypoint", OriginGossip), wp("wp-2", "waypoint", OriginGossip), wp("0", "x", OriginGossip)
	established := Build(1, Input{Waypoints: []*Waypoint{honest, second}})
	if got := established.wps.byKey["prod/waypoint"]; len(got) != 2 {
		t.Fatalf("two instances of one identity: %v", got)
	}
	s := Build(2, Input{Waypoints: []*Waypoint{honest, second, rogue}, Previous: established})
	if got := s.wps.byKey["prod/waypoint"]; len(got) != 2 || got[0].Node == "0" || got[1].Node == "0" {
		t.Errorf("instances %v; want only the established identity's", got)
	}
	if _, ok := s.WaypointByAddr(netip.MustParseAddr("10.0.1.66")); ok {
		t.Error("the rogue instance's address is a waypoint's")
	}
	if cs := s.WaypointConflicts(); len(cs) != 1 || cs[0].Node != "0" {
		t.Errorf("conflicts %v; want the rogue instance", cs)
	}
	// With no history, two gossip identities bind the name to no one.
	if fresh := Build(1, Input{Waypoints: []*Waypoint{honest, rogue}}); len(fresh.Waypoints()) != 0 || len(fresh.WaypointConflicts()) != 2 {
		t.Errorf("fresh contest: %v, %v", fresh.Waypoints(), fresh.WaypointConflicts())
	}
	// This host's own waypoint and istiod's outrank gossip.
	local := wp("wp-1", "waypoint", OriginConfig)
	local.Local = true
	if got := Build(1, Input{Waypoints: []*Waypoint{rogue, local}}).Waypoints(); len(got) != 1 || got[0] != local {
		t.Errorf("local waypoint lost: %v", got)
	}
}

// A plaintext gossip claim on a waypoint's address loses: the address is
// reached over HBONE. It is not contested either: nobody else claims it.
func TestPlaintextClaimOnWaypointAddress(t *testing.T) {
	a := netip.MustParseAddr("10.0.1.1")
	wp := &Waypoint{Name: "waypoint", Namespace: "prod", ServiceAccount: "waypoint", TrustDomain: "cluster.local", Node: "wp-1",
		Origin: OriginGossip, Addresses: []netip.Addr{a}}
	plain := gossipWorkload("0", "evil", "x", "10.0.1.1")
	plain.Tunnel = TunnelNone
	s := Build(1, Input{Workloads: []*Workload{plain}, Waypoints: []*Waypoint{wp}})
	if w, ok := s.WorkloadByAddr(a); ok {
		t.Errorf("the waypoint's address went to %s", w.UID)
	}
	if s.Contested(a) {
		t.Error("an address only a refused claim names is contested")
	}
	if cs := s.Conflicts(); len(cs) != 1 || cs[0].Reason != ContestDowngrade {
		t.Errorf("conflicts %v", cs)
	}
}

// A workload that lost its address is no endpoint: its own service cannot
// send traffic for it to the address it did not win (in plaintext, here).
func TestContestLoserIsNoEndpoint(t *testing.T) {
	victim := gossipWorkload("web-1", "default", "reviews", "10.0.0.1")
	victim.AddressProven = true
	thief := gossipWorkload("0", "evil", "x", "10.0.0.1")
	thief.Tunnel = TunnelNone
	d := decl("0", "steal", thief.UID)
	d.Namespace = "evil"
	d.Hostname = "steal.evil.svc.cluster.local"
	s := Build(1, Input{Workloads: []*Workload{victim, thief}, Services: []ServiceDecl{d}, Limits: meshLimits})
	svc, ok := s.ServiceByHostname(d.Hostname)
	if !ok || len(svc.Endpoints) != 0 {
		t.Errorf("service %+v: the loser is an endpoint", svc)
	}
}

// Claims of different origins never share an address, whatever node names
// they carry: a gossip workload on a static workload's address and port
// loses it, ports included.
func TestOriginsNeverShareAnAddress(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.20")
	static := &Workload{UID: "static/default/db", Name: "db", Namespace: "default", Node: "static", Origin: OriginConfig,
		Tunnel: TunnelHBONE, Addresses: []netip.Addr{a}, Ports: []uint16{5432}, Primary: true}
	rogue := gossipWorkload("static", "default", "x", "10.0.0.20")
	rogue.UID, rogue.Ports = "static/default/zz", []uint16{5432}
	s := Build(1, Input{Workloads: []*Workload{static, rogue}})
	if w, _ := s.WorkloadFor(netip.AddrPortFrom(a, 5432)); w != static {
		t.Errorf("port 5432 goes to %v", w)
	}
	if cs := s.Conflicts(); len(cs) != 1 || cs[0].Loser != rogue.UID {
		t.Errorf("conflicts %v", cs)
	}
}

// Only the origin ranks a declaration: a gossip declaration whose node is
// named as istiod is still gossip (discovery refuses the name as well).
func TestNodeNameNeverRanks(t *testing.T) {
	d := decl(IstiodNode, "x", "istiod/default/w")
	d.Hostname = "db.corp.example.com"
	w := gossipWorkload(IstiodNode, "default", "x", "10.0.0.66")
	w.UID = "istiod/default/w"
	if s := Build(1, Input{Workloads: []*Workload{w}, Services: []ServiceDecl{d}, Limits: meshLimits}); len(s.Services()) != 0 {
		t.Errorf("a gossip declaration named as istiod's escaped the gossip limits: %v", s.Services())
	}
}

// A newcomer's explicit VIP never takes a VIP a service held, allocated or
// explicit: the holder keeps its address.
func TestHeldVIPIsKept(t *testing.T) {
	web := gossipWorkload("web-1", "default", "reviews", "10.0.0.1")
	rogue := gossipWorkload("0", "evil", "x", "10.0.0.66")
	reviews := decl("web-1", "reviews", web.UID)
	held := Build(1, Input{Workloads: []*Workload{web, rogue}, Services: []ServiceDecl{reviews}, Limits: meshLimits})
	svc, _ := held.ServiceByHostname("reviews.default.svc.cluster.local")
	steal := decl("0", "steal", rogue.UID)
	steal.Namespace, steal.Hostname, steal.VIPs = "evil", "steal.evil.svc.cluster.local", svc.Addresses
	s := Build(2, Input{Workloads: []*Workload{web, rogue}, Services: []ServiceDecl{reviews, steal}, Limits: meshLimits, Previous: held})
	if got, ok := s.ServiceByVIP(svc.Addresses[0]); !ok || got.Key() != "default/reviews" {
		t.Errorf("VIP %s is %v's, want default/reviews's", svc.Addresses[0], got)
	}
}

// A gossip service hostname of the form <name>.<ns>.svc.<domain> names its
// namespace: another namespace cannot squat it, even first.
func TestHostnameBoundToNamespace(t *testing.T) {
	rogue := gossipWorkload("0", "evil", "x", "10.0.0.66")
	squat := decl("0", "squat", rogue.UID)
	squat.Namespace, squat.Hostname = "evil", "reviews.default.svc.cluster.local"
	s := Build(1, Input{Workloads: []*Workload{rogue}, Services: []ServiceDecl{squat}, Limits: meshLimits})
	if len(s.Services()) != 0 || len(s.ServiceConflicts()) != 1 || s.ServiceConflicts()[0].What != declHostnameNS {
		t.Errorf("services %v, conflicts %v", s.Services(), s.ServiceConflicts())
	}
}

// A gossip workload never stands on a VIP of istiod or of this host's
// configuration (a ClusterIP), nor in the operator's VIP ranges: the service
// keeps its VIP, the workload loses the address.
func TestGossipWorkloadOnATrustedVIP(t *testing.T) {
	vip := netip.MustParseAddr("10.96.0.10")
	rogue := gossipWorkload("0", "evil", "x", "10.96.0.10")
	svc := decl(IstiodNode, "web")
	svc.Origin, svc.VIPs = OriginIstiod, []netip.Addr{vip}
	s := Build(1, Input{Workloads: []*Workload{rogue}, Services: []ServiceDecl{svc}, Limits: meshLimits})
	if got, ok := s.ServiceByVIP(vip); !ok || got.Key() != "default/web" {
		t.Errorf("the ClusterIP is %v's", got)
	}
	if w, ok := s.WorkloadByAddr(vip); ok {
		t.Errorf("the ClusterIP is also workload %s's", w.UID)
	}
	if cs := s.Conflicts(); len(cs) != 1 || cs[0].Reason != ContestVIP {
		t.Errorf("conflicts %v", cs)
	}
	lim := meshLimits
	lim.VIPs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
	if s := Build(1, Input{Workloads: []*Workload{rogue}, Limits: lim}); s.Contested(vip) || len(s.Conflicts()) != 1 {
		t.Errorf("a workload in the operator's VIP ranges: conflicts %v", s.Conflicts())
	} else if _, ok := s.WorkloadByAddr(vip); ok {
		t.Error("a workload in the operator's VIP ranges holds its address")
	}
}

// A peer named as a [[remote_workload]]'s node publishes a workload with its
// UID: the configuration's keeps the UID, so a service of the configuration
// never takes the peer's workload as its endpoint.
func TestUIDOfAStrongerSource(t *testing.T) {
	static := &Workload{UID: "db-host/default/db", Name: "db", Namespace: "default", ServiceAccount: "db", TrustDomain: "cluster.local",
		Node: "db-host", Origin: OriginConfig, Tunnel: TunnelHBONE, Healthy: true, Capacity: 1,
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.20")}}
	impostor := gossipWorkload("db-host", "default", "x", "10.0.0.66")
	impostor.UID, impostor.Name = static.UID, "db"
	svc := decl("me", "db", static.UID)
	svc.Origin, svc.Local = OriginConfig, true
	for _, order := range [][]*Workload{{static, impostor}, {impostor, static}} {
		s := Build(1, Input{Workloads: order, Services: []ServiceDecl{svc}, Limits: meshLimits})
		if w, _ := s.WorkloadByUID(static.UID); w != static {
			t.Errorf("the UID is %+v's", w)
		}
		got, _ := s.ServiceByHostname("db.default.svc.cluster.local")
		if got == nil || len(got.Endpoints) != 1 || got.Endpoints[0].Workload != static {
			t.Errorf("endpoints %+v", got)
		}
		if _, ok := s.WorkloadByAddr(netip.MustParseAddr("10.0.0.66")); ok {
			t.Error("the impostor holds its address")
		}
	}
}

// With [gossip] require_address_proof, a gossip workload counts only when its
// certificate proves its addresses: an unproven claim is nobody's, not even
// uncontested, and no endpoint.
func TestRequireAddressProof(t *testing.T) {
	proven := gossipWorkload("web-1", "default", "reviews", "10.0.0.1")
	proven.AddressProven = true
	unproven := gossipWorkload("0", "default", "x", "10.0.0.66")
	d := decl("0", "other", unproven.UID)
	lim := meshLimits
	lim.RequireAddressProof = true
	s := Build(1, Input{Workloads: []*Workload{proven, unproven}, Services: []ServiceDecl{d}, Limits: lim})
	if w, ok := s.WorkloadByAddr(netip.MustParseAddr("10.0.0.1")); !ok || w != proven {
		t.Errorf("the proven claim: %v", w)
	}
	if w, ok := s.WorkloadByAddr(netip.MustParseAddr("10.0.0.66")); ok {
		t.Errorf("an unproven claim is used: %s", w.UID)
	}
	if svc, _ := s.ServiceByHostname("other.default.svc.cluster.local"); svc == nil || len(svc.Endpoints) != 0 {
		t.Errorf("service %+v", svc)
	}
	if cs := s.Conflicts(); len(cs) != 1 || cs[0].Reason != ContestUnproven {
		t.Errorf("conflicts %v", cs)
	}
}
