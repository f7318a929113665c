package state

import (
	"net/netip"
	"slices"
	"testing"
)

// trafficService is a service on port 80 (target 8080) with the given endpoints.
func trafficService(lb *LoadBalancing, ws ...*Workload) *Service {
	svc := &Service{Name: "s", Namespace: "ns", Ports: []ServicePort{{Port: 80, TargetPort: 8080}}}
	svc.LoadBalancing = lb
	for _, w := range ws {
		svc.Endpoints = append(svc.Endpoints, &Endpoint{Workload: w, UID: w.UID, Ports: svc.Ports})
	}
	return svc
}

func endpoint(uid string, healthy bool, capacity uint32, loc Locality, node, network string) *Workload {
	return &Workload{UID: uid, Name: uid, Namespace: "ns", Healthy: healthy, Capacity: capacity, Locality: loc, Node: node,
		Network: network, Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Origin: OriginIstiod}
}

// picks draws every value of intn once and returns the endpoints chosen.
func picks(t *testing.T, svc *Service, src *Workload) []string {
	t.Helper()
	var out []string
	for i := 0; ; i++ {
		total := 0
		e, _, ok := PickEndpoint(svc, 80, src, func(n int) int { total = n; return i % n })
		if !ok {
			return nil
		}
		out = append(out, e.UID)
		if i+1 >= total {
			break
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestPickEndpointCapacityAndHealth(t *testing.T) {
	loc := Locality{}
	drained := endpoint("drained", true, 0, loc, "n", "")
	sick := endpoint("sick", false, 1, loc, "n", "")
	ok := endpoint("ok", true, 1, loc, "n", "")
	if got := picks(t, trafficService(nil, drained, sick, ok), nil); !slices.Equal(got, []string{"ok"}) {
		t.Errorf("default: %v, want only the healthy endpoint with capacity (0 is drained)", got)
	}
	allowAll := trafficService(&LoadBalancing{AllowAll: true}, drained, sick, ok)
	if got := picks(t, allowAll, nil); !slices.Equal(got, []string{"ok", "sick"}) {
		t.Errorf("ALLOW_ALL: %v, want the unhealthy one too, never the drained one", got)
	}
	if got := picks(t, trafficService(nil, drained), nil); got != nil {
		t.Errorf("only a drained endpoint: %v, want none", got)
	}
}

func TestPickEndpointLocality(t *testing.T) {
	src := endpoint("src", true, 1, Locality{Region: "eu", Zone: "eu-1"}, "node-a", "net1")
	sameNode := endpoint("same-node", true, 1, Locality{Region: "eu", Zone: "eu-2"}, "node-a", "net1")
	sameZone := endpoint("same-zone", true, 1, Locality{Region: "eu", Zone: "eu-1"}, "node-b", "net1")
	sameRegion := endpoint("same-region", true, 1, Locality{Region: "eu", Zone: "eu-3"}, "node-c", "net1")
	far := endpoint("far", true, 1, Locality{Region: "us", Zone: "us-1"}, "node-d", "net1")
	otherNet := endpoint("other-net-same-zone", true, 1, Locality{Region: "eu", Zone: "eu-1"}, "node-e", "net2")
	all := []*Workload{sameNode, sameZone, sameRegion, far}

	// PreferClose: NETWORK, REGION, ZONE, SUBZONE.
	closest := &LoadBalancing{Mode: LBFailover, Preference: []Scope{ScopeNetwork, ScopeRegion, ScopeZone, ScopeSubzone}}
	if got := picks(t, trafficService(closest, all...), src); !slices.Equal(got, []string{"same-zone"}) {
		t.Errorf("failover: %v, want the same zone", got)
	}
	if got := picks(t, trafficService(closest, sameRegion, far), src); !slices.Equal(got, []string{"same-region"}) {
		t.Errorf("failover without the zone: %v, want the same region", got)
	}
	if got := picks(t, trafficService(closest, far), src); !slices.Equal(got, []string{"far"}) {
		t.Errorf("failover with only a far endpoint: %v, want it", got)
	}
	// A leading NETWORK is preferred, not required: the same network outranks,
	// and past a network mismatch the count goes on.
	if got := picks(t, trafficService(closest, otherNet, sameRegion), src); !slices.Equal(got, []string{"same-region"}) {
		t.Errorf("leading network: %v, want the same network first", got)
	}
	if got := picks(t, trafficService(closest, otherNet, far), src); !slices.Equal(got, []string{"far"}) {
		t.Errorf("leading network: %v, want the same network, however far", got)
	}
	otherNetFar := endpoint("other-net-far", true, 1, Locality{Region: "us"}, "node-f", "net2")
	if got := picks(t, trafficService(closest, otherNet, otherNetFar), src); !slices.Equal(got, []string{"other-net-same-zone"}) {
		t.Errorf("leading network mismatch: %v, want the rest of the preference to rank", got)
	}
	strictNet := &LoadBalancing{Mode: LBStrict, Preference: []Scope{ScopeNetwork, ScopeRegion}}
	if got := picks(t, trafficService(strictNet, otherNet, far), src); !slices.Equal(got, []string{"other-net-same-zone"}) {
		t.Errorf("strict with a leading network: %v, want the network not required", got)
	}
	// internalTrafficPolicy: Local is STRICT on NODE.
	local := &LoadBalancing{Mode: LBStrict, Preference: []Scope{ScopeNode}}
	if got := picks(t, trafficService(local, all...), src); !slices.Equal(got, []string{"same-node"}) {
		t.Errorf("strict node: %v, want only this node's", got)
	}
	if got := picks(t, trafficService(local, sameZone, far), src); got != nil {
		t.Errorf("strict node with none on this node: %v, want none", got)
	}
	// A gossip peer's claim of the client's zone and node is its word only: it
	// ranks last, and STRICT never takes it.
	claimer := endpoint("gossip-claims-here", true, 1, Locality{Region: "eu", Zone: "eu-1"}, "node-a", "net1")
	claimer.Origin = OriginGossip
	if got := picks(t, trafficService(closest, claimer, far), src); !slices.Equal(got, []string{"far"}) {
		t.Errorf("failover with a gossip endpoint claiming this zone: %v, want the istiod one", got)
	}
	if got := picks(t, trafficService(local, claimer), src); got != nil {
		t.Errorf("strict node with only a gossip endpoint claiming this node: %v, want none", got)
	}
	// A mode without preference, or a preference without mode, ranks nothing.
	if got := picks(t, trafficService(&LoadBalancing{Preference: []Scope{ScopeNode}}, sameNode, far), src); len(got) != 2 {
		t.Errorf("preference without a mode: %v, want both", got)
	}
}

func TestServiceTrafficHelpers(t *testing.T) {
	svc := &Service{Namespace: "ns"}
	svc.SubjectAltNames = []string{"spiffe://cluster.local/ns/ns/sa/se", "not a spiffe id", "spiffe://cluster.local/ns/ns/sa/se"}
	if ids := svc.ExtraIdentities(); len(ids) != 1 || ids[0].String() != "spiffe://cluster.local/ns/ns/sa/se" {
		t.Errorf("extra identities %v", ids)
	}
	if !svc.VisibleTo("other") || svc.Passthrough() {
		t.Error("a default service is public and not passthrough")
	}
	svc.NamespaceOnly = true
	if svc.VisibleTo("other") || svc.VisibleTo("") || !svc.VisibleTo("ns") {
		t.Error("a NAMESPACE service is visible to its namespace only")
	}
	svc.LoadBalancing = &LoadBalancing{Mode: LBPassthrough}
	if !svc.Passthrough() {
		t.Error("PASSTHROUGH not seen")
	}
}

// A weighted split sends each connection to one waypoint in proportion to
// its weight; 0 never; all zero: the waypoint the service names.
func TestPickServiceWaypoint(t *testing.T) {
	mk := func(name, addr string) *Waypoint {
		return &Waypoint{Name: name, Namespace: "ns", ServiceAccount: name, TrustDomain: "cluster.local", Node: name,
			Addresses: []netip.Addr{netip.MustParseAddr(addr)}, Origin: OriginIstiod}
	}
	snap := Build(1, Input{Waypoints: []*Waypoint{mk("stable", "10.0.9.1"), mk("canary", "10.0.9.2"), mk("off", "10.0.9.3")}})
	svc := &Service{Namespace: "ns", UseWaypoint: "stable"}
	svc.WeightedWaypoints = []WeightedWaypoint{{"stable", 3}, {"canary", 1}, {"off", 0}}
	got := map[string]int{}
	for i := range 4 {
		ref, wps := snap.PickServiceWaypoint(svc, func(n int) int { return i % n })
		if len(wps) != 1 || wps[0].Name != ref {
			t.Fatalf("pick %d: %s %v", i, ref, wps)
		}
		got[ref]++
	}
	if got["stable"] != 3 || got["canary"] != 1 || got["off"] != 0 {
		t.Errorf("split %v, want 3:1:0", got)
	}
	if n := len(snap.BoundWaypoints(svc)); n != 4 {
		t.Errorf("bound instances %d, want the named one and the three of the split", n)
	}
	svc.WeightedWaypoints = []WeightedWaypoint{{"canary", 0}}
	if ref, _ := snap.PickServiceWaypoint(svc, func(int) int { t.Fatal("drew with no weight"); return 0 }); ref != "stable" {
		t.Errorf("all zero: %s, want the named waypoint", ref)
	}
}

// The service an inbound connection was for: host= names it among those the
// local workload backs; else the first whose port maps to the connection's.
func TestInboundService(t *testing.T) {
	local := &Workload{UID: "n/ns/app", Name: "app", Namespace: "ns", ServiceAccount: "app", TrustDomain: "cluster.local", Local: true,
		Healthy: true, Capacity: 1, Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.5")}, Origin: OriginConfig}
	decl := func(name string, target uint16) ServiceDecl {
		return ServiceDecl{Node: "n", Local: true, Name: name, Namespace: "ns", Hostname: name + ".ns.svc.cluster.local",
			Ports: []ServicePort{{Port: 80, TargetPort: target}}, Workloads: []string{local.UID}, Origin: OriginConfig}
	}
	snap := Build(1, Input{Workloads: []*Workload{local}, Services: []ServiceDecl{decl("a", 8080), decl("b", 8080), decl("c", 9090)}})
	if svc := snap.InboundService(local, "b.ns.svc.cluster.local", 8080); svc == nil || svc.Name != "b" {
		t.Errorf("host=b: %v", svc)
	}
	if svc := snap.InboundService(local, "", 8080); svc == nil || svc.Name != "a" {
		t.Errorf("port 8080: %v, want the first", svc)
	}
	if svc := snap.InboundService(local, "unknown.example", 9090); svc == nil || svc.Name != "c" {
		t.Errorf("an unknown host on 9090: %v, want c by its port", svc)
	}
	if svc := snap.InboundService(local, "", 7000); svc != nil {
		t.Errorf("port 7000: %v, want none", svc)
	}
}

// A waypoint whose istiod pods are all not ready takes no traffic, and keeps
// its name bound to istiod's identity: a gossip instance of another identity
// does not take the name meanwhile.
func TestUnreadyWaypointKeepsItsName(t *testing.T) {
	istiod := &Waypoint{Name: "wp", Namespace: "ns", ServiceAccount: "wp", TrustDomain: "cluster.local", Node: "k8s-node",
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.9.1")}, Origin: OriginIstiod, Unready: true}
	rogue := &Waypoint{Name: "wp", Namespace: "ns", ServiceAccount: "evil", TrustDomain: "cluster.local", Node: "evil-host",
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.9.66")}, Origin: OriginGossip, AddressProven: true}
	snap := Build(1, Input{Waypoints: []*Waypoint{istiod, rogue}})
	svc := &Service{Namespace: "ns", UseWaypoint: "wp"}
	if wps := snap.ServiceWaypoint(svc); len(wps) != 0 {
		t.Fatalf("instances %v, want none while istiod's are not ready", wps)
	}
	if cs := snap.WaypointConflicts(); len(cs) != 1 || cs[0].Node != "evil-host" {
		t.Fatalf("conflicts %v, want the gossip instance refused", cs)
	}
	istiod.Unready = false
	snap = Build(2, Input{Waypoints: []*Waypoint{istiod, rogue}, Previous: snap})
	if wps := snap.ServiceWaypoint(svc); len(wps) != 1 || wps[0] != istiod {
		t.Fatalf("instances %v, want istiod's once ready", wps)
	}
}
