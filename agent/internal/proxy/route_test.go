package proxy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

func testSnapshot() *state.Snapshot {
	mk := func(uid, sa string, local bool, tunnel state.TunnelProtocol, addr string) *state.Workload {
		return &state.Workload{UID: uid, Name: uid, Namespace: "default", ServiceAccount: sa, TrustDomain: "cluster.local",
			Addresses: []netip.Addr{netip.MustParseAddr(addr)}, Tunnel: tunnel, Local: local}
	}
	return state.NewSnapshot(1, []*state.Workload{
		mk("local-a", "a", true, state.TunnelHBONE, "10.0.0.1"),
		mk("local-b", "b", true, state.TunnelHBONE, "10.0.0.2"),
		mk("remote", "r", false, state.TunnelHBONE, "10.0.0.9"),
		mk("plain", "p", false, state.TunnelNone, "10.0.0.8"),
	})
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestDecideOutbound(t *testing.T) {
	snap := testSnapshot()
	cases := []struct {
		name, src, dst string
		kind           RouteKind
		source         string
		gateway        string
	}{
		{"hbone to a captured workload", "10.0.0.1:5000", "10.0.0.9:8080", RouteHBONE, "spiffe://cluster.local/ns/default/sa/a", "10.0.0.9:15008"},
		{"source identity by source address", "10.0.0.2:5000", "10.0.0.9:8080", RouteHBONE, "spiffe://cluster.local/ns/default/sa/b", "10.0.0.9:15008"},
		{"unknown source address uses the first local workload", "192.168.1.1:5000", "10.0.0.9:80", RouteHBONE, "spiffe://cluster.local/ns/default/sa/a", "10.0.0.9:15008"},
		{"plaintext to a non-HBONE workload", "10.0.0.1:5000", "10.0.0.8:80", RoutePlain, "", ""},
		{"passthrough to an unknown address", "10.0.0.1:5000", "93.184.216.34:443", RoutePassthrough, "", ""},
		{"drop loopback agent port", "127.0.0.1:5000", "127.0.0.1:15001", RouteDrop, "", ""},
		{"v4-mapped destination", "10.0.0.1:5000", "[::ffff:10.0.0.9]:8080", RouteHBONE, "spiffe://cluster.local/ns/default/sa/a", "10.0.0.9:15008"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := DecideOutbound(snap, ap(tc.src), ap(tc.dst))
			if r.Kind != tc.kind {
				t.Fatalf("kind = %s, want %s (%s)", r.Kind, tc.kind, r.Reason)
			}
			if tc.kind != RouteHBONE {
				return
			}
			if r.Source.String() != tc.source || r.Gateway.String() != tc.gateway ||
				len(r.Expected) != 1 || r.Expected[0].String() != "spiffe://cluster.local/ns/default/sa/r" {
				t.Errorf("route = %+v", r)
			}
		})
	}
}

func TestNoLocalIdentityNeverPlaintext(t *testing.T) {
	snap := state.NewSnapshot(1, []*state.Workload{{UID: "r", Namespace: "default", ServiceAccount: "r",
		TrustDomain: "cluster.local", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.9")}, Tunnel: state.TunnelHBONE}})
	if r := DecideOutbound(snap, ap("10.0.0.1:1"), ap("10.0.0.9:80")); r.Kind != RouteDrop {
		t.Fatalf("HBONE destination without a local identity: %s, want drop", r.Kind)
	}
}

// meshSnapshot: a local client, a service "reviews" with two remote endpoints
// (r1 captured, r2 plain), from this host's configuration. Waypoints are bound
// by name: r1 names the last one given, and the service the first one that
// serves a whole namespace.
func meshSnapshot(waypoints ...*state.Waypoint) *state.Snapshot {
	mk := func(uid, ns, sa string, local bool, tunnel state.TunnelProtocol, addr string) *state.Workload {
		return &state.Workload{UID: uid, Name: uid, Namespace: ns, ServiceAccount: sa, TrustDomain: "cluster.local",
			Addresses: []netip.Addr{netip.MustParseAddr(addr)}, Tunnel: tunnel, Local: local, Healthy: true, Capacity: 1,
			Origin: state.OriginConfig}
	}
	r1 := mk("r1", "default", "reviews", false, state.TunnelHBONE, "10.0.0.11")
	svc := state.ServiceDecl{Node: "n", Name: "reviews", Namespace: "default", Hostname: "reviews.default.svc.cluster.local",
		VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.1")}, Ports: []state.ServicePort{{Port: 9080, TargetPort: 8080}},
		Workloads: []string{"r1", "r2"}, Origin: state.OriginConfig}
	if len(waypoints) > 0 {
		r1.UseWaypoint = waypoints[len(waypoints)-1].Name
	}
	for _, wp := range waypoints {
		if wp.ForServiceAccount == "" && svc.UseWaypoint == "" {
			svc.UseWaypoint = wp.Name
		}
	}
	return state.Build(1, state.Input{
		Workloads: []*state.Workload{
			mk("client", "default", "client", true, state.TunnelHBONE, "10.0.0.1"),
			r1,
			mk("r2", "default", "reviews-plain", false, state.TunnelNone, "10.0.0.12"),
			mk("other", "other", "o", false, state.TunnelHBONE, "10.0.0.13"),
		},
		Services:  []state.ServiceDecl{svc},
		Waypoints: waypoints,
	})
}

func wp(name, forSA, addr string) *state.Waypoint {
	return &state.Waypoint{Name: name, Namespace: "default", ServiceAccount: name, TrustDomain: "cluster.local",
		ForServiceAccount: forSA, Addresses: []netip.Addr{netip.MustParseAddr(addr)}, Node: name}
}

func TestServiceRoutes(t *testing.T) {
	snap := meshSnapshot()
	first := func(int) int { return 0 }
	second := func(n int) int { return n - 1 }
	r := decide(snap, ap("10.0.0.1:5000"), ap("10.96.0.1:9080"), first)
	if r.Kind != RouteHBONE || r.Target != ap("10.0.0.11:8080") || r.Gateway != ap("10.0.0.11:15008") || r.Service == nil ||
		r.Expected[0].String() != "spiffe://cluster.local/ns/default/sa/reviews" {
		t.Errorf("VIP to captured endpoint: %+v", r)
	}
	if r := decide(snap, ap("10.0.0.1:5000"), ap("10.96.0.1:9080"), second); r.Kind != RoutePlain || r.Target != ap("10.0.0.12:8080") {
		t.Errorf("VIP to plain endpoint: %+v", r)
	}
	if r := decide(snap, ap("10.0.0.1:5000"), ap("10.96.0.1:80"), first); r.Kind != RouteDrop {
		t.Errorf("VIP on a port the service lacks: %s, want drop", r.Kind)
	}
	for _, e := range snap.Services()[0].Endpoints {
		e.Workload.Healthy = false
	}
	if r := decide(snap, ap("10.0.0.1:5000"), ap("10.96.0.1:9080"), first); r.Kind != RouteDrop {
		t.Errorf("VIP with no healthy endpoint: %s, never plaintext to the VIP", r.Kind)
	}
}

func TestWaypointRoutes(t *testing.T) {
	first := func(int) int { return 0 }
	ns := wp("ns-wp", "", "10.0.0.50")
	snap := meshSnapshot(ns)
	r := decide(snap, ap("10.0.0.1:5000"), ap("10.96.0.1:9080"), first)
	if r.Kind != RouteHBONE || r.Target != ap("10.96.0.1:9080") || r.Gateway != ap("10.0.0.50:15008") || r.Waypoint != ns ||
		r.Expected[0].String() != "spiffe://cluster.local/ns/default/sa/ns-wp" {
		t.Errorf("service with a waypoint must go to it with the service as target: %+v", r)
	}
	r = decide(snap, ap("10.0.0.1:5000"), ap("10.0.0.11:8080"), first)
	if r.Kind != RouteHBONE || r.Target != ap("10.0.0.11:8080") || r.Gateway != ap("10.0.0.50:15008") {
		t.Errorf("workload with a waypoint must go to it with the workload as target: %+v", r)
	}
	if r := decide(snap, ap("10.0.0.50:5000"), ap("10.0.0.11:8080"), first); r.Gateway != ap("10.0.0.11:15008") {
		t.Errorf("the waypoint itself is sent back to its waypoint: %+v", r)
	}
	if r := decide(snap, ap("10.0.0.1:5000"), ap("10.0.0.12:8080"), first); r.Kind != RoutePlain {
		t.Errorf("an uncaptured workload has no waypoint: %+v", r)
	}
	if r := decide(snap, ap("10.0.0.1:5000"), ap("10.0.0.13:80"), first); r.Waypoint != nil {
		t.Errorf("a workload of another namespace used this waypoint: %+v", r)
	}
	// A workload that names a service-account waypoint goes there.
	sa := wp("sa-wp", "reviews", "10.0.0.51")
	snap = meshSnapshot(ns, sa)
	if r := decide(snap, ap("10.0.0.1:5000"), ap("10.0.0.11:8080"), first); r.Waypoint != sa {
		t.Errorf("the waypoint the workload names: %+v", r.Waypoint)
	}
}

func TestServiceTrafficSkipsWorkloadWaypoints(t *testing.T) {
	// Only r1 has a waypoint (its own, a workload waypoint); the service has
	// none: service traffic goes straight to either endpoint, as ztunnel's
	// (a workload waypoint is for traffic addressed to the workload).
	sa := wp("sa-wp", "reviews", "10.0.0.51")
	snap := meshSnapshot(sa)
	r1 := decide(snap, ap("10.0.0.1:5000"), ap("10.96.0.1:9080"), func(int) int { return 0 })
	if r1.Waypoint != nil || r1.Kind != RouteHBONE || r1.Target != ap("10.0.0.11:8080") || r1.Gateway != ap("10.0.0.11:15008") {
		t.Errorf("waypoint-enabled endpoint, through its service: %+v", r1)
	}
	if w := decide(snap, ap("10.0.0.1:5000"), ap("10.0.0.11:8080"), func(int) int { return 0 }); w.Waypoint != sa {
		t.Errorf("the same endpoint by its own address: %+v, want its waypoint", w)
	}
	r2 := decide(snap, ap("10.0.0.1:5000"), ap("10.96.0.1:9080"), func(n int) int { return n - 1 })
	if r2.Waypoint != nil || r2.Kind != RoutePlain || r2.Target != ap("10.0.0.12:8080") {
		t.Errorf("plain endpoint: %+v", r2)
	}
}

func decide(snap *state.Snapshot, src, dst netip.AddrPort, intn func(int) int) Route {
	return decideOutbound(snap, DefaultSource(snap, src.Addr()), src, dst, intn)
}

// An unrecognised process never borrows the identity of a workload recognised
// by its processes, even from that workload's address; with no other local
// workload it has none, and a mesh destination is refused rather than reached
// as someone else.
func TestUnrecognisedProcessSkipsRecognisedWorkloads(t *testing.T) {
	snap := testSnapshot()
	reserve := func(uids ...string) func(string) bool {
		return func(uid string) bool { return slices.Contains(uids, uid) }
	}
	name := func(w *state.Workload) string {
		if w == nil {
			return "none"
		}
		return w.UID
	}
	cases := []struct {
		src      string
		reserved func(string) bool
		want     string
	}{
		{"10.0.0.1", nil, "local-a"},
		{"10.0.0.1", reserve("local-a"), "local-b"},
		{"192.168.1.1", reserve("local-a"), "local-b"},
		{"10.0.0.2", reserve("local-a"), "local-b"},
		{"10.0.0.1", reserve("local-a", "local-b"), "none"},
	}
	for _, tc := range cases {
		if got := name(defaultSource(snap, netip.MustParseAddr(tc.src), tc.reserved)); got != tc.want {
			t.Errorf("from %s: %s, want %s", tc.src, got, tc.want)
		}
	}
	r := DecideOutboundFrom(snap, defaultSource(snap, netip.MustParseAddr("10.0.0.1"), reserve("local-a", "local-b")),
		ap("10.0.0.1:5000"), ap("10.0.0.9:8080"))
	if r.Kind != RouteDrop {
		t.Errorf("no identity left for an HBONE destination: route %s, want drop", r.Kind)
	}
}

// An address two gossip claims contest, none proven or established, is
// dropped with CONTESTED: never passed through in plaintext.
func TestContestedAddressIsDropped(t *testing.T) {
	claim := func(node string) *state.Workload {
		return &state.Workload{UID: node + "/default/w", Name: "w", Namespace: "default", ServiceAccount: node, TrustDomain: "cluster.local",
			Node: node, Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.9")}, Tunnel: state.TunnelHBONE, Origin: state.OriginGossip}
	}
	client := &state.Workload{UID: "me/default/c", Name: "c", Namespace: "default", ServiceAccount: "c", TrustDomain: "cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Tunnel: state.TunnelHBONE, Local: true, Origin: state.OriginConfig}
	snap := state.Build(1, state.Input{Workloads: []*state.Workload{client, claim("0"), claim("victim")}})
	r := DecideOutbound(snap, ap("10.0.0.1:5000"), ap("10.0.0.9:80"))
	if r.Kind != RouteDrop || r.Flag != "CONTESTED" {
		t.Errorf("contested address: %+v, want a CONTESTED drop", r)
	}
	if f := (&RouteError{Route: r}).ResponseFlag(); f != "CONTESTED" {
		t.Errorf("response flag %q", f)
	}
}

// The address of a workload whose node failed or is cut off (its record dropped, gossip's Unreachable) is never
// passed through in plaintext: the connection is refused; once another workload holds the address, it is that
// workload's; an address never the mesh's passes through.
func TestUnreachableMeshAddressIsDropped(t *testing.T) {
	client := &state.Workload{UID: "me/default/c", Name: "c", Namespace: "default", ServiceAccount: "c", TrustDomain: "cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Tunnel: state.TunnelHBONE, Local: true, Origin: state.OriginConfig}
	unreachable := map[netip.Addr]string{netip.MustParseAddr("10.0.0.9"): "h2"}
	snap := state.Build(1, state.Input{Workloads: []*state.Workload{client}, Unreachable: unreachable})
	r := DecideOutbound(snap, ap("10.0.0.1:5000"), ap("10.0.0.9:80"))
	if r.Kind != RouteDrop || !strings.Contains(r.Reason, "node h2") {
		t.Errorf("an unreachable mesh address: %+v, want a drop naming h2", r)
	}
	if r := DecideOutbound(snap, ap("10.0.0.1:5000"), ap("10.0.0.8:80")); r.Kind != RoutePassthrough {
		t.Errorf("an address never the mesh's: %+v, want passthrough", r)
	}
	back := &state.Workload{UID: "h2/default/w", Name: "w", Namespace: "default", ServiceAccount: "w", TrustDomain: "cluster.local",
		Node: "h2", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.9")}, Tunnel: state.TunnelHBONE, Origin: state.OriginGossip}
	snap = state.Build(2, state.Input{Workloads: []*state.Workload{client, back}, Unreachable: unreachable})
	if r := DecideOutbound(snap, ap("10.0.0.1:5000"), ap("10.0.0.9:80")); r.Kind != RouteHBONE {
		t.Errorf("the address held again: %+v, want HBONE", r)
	}
}

// A workload or service that names a waypoint nobody runs (or whose name is
// contested) is never reached around it: the connection is dropped.
func TestUnresolvedWaypointIsNotBypassed(t *testing.T) {
	w, _ := meshSnapshot().WorkloadByAddr(netip.MustParseAddr("10.0.0.11"))
	c := *w
	c.UseWaypoint = "gone"
	client := &state.Workload{UID: "client", Name: "client", Namespace: "default", ServiceAccount: "client", TrustDomain: "cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Tunnel: state.TunnelHBONE, Local: true, Origin: state.OriginConfig}
	s := state.Build(1, state.Input{Workloads: []*state.Workload{client, &c}})
	if r := DecideOutbound(s, ap("10.0.0.1:5000"), ap("10.0.0.11:8080")); r.Kind != RouteDrop {
		t.Errorf("workload naming an unknown waypoint: %+v, want a drop", r)
	}
	svc := state.ServiceDecl{Node: "n", Name: "r", Namespace: "default", Hostname: "r.default.svc.cluster.local",
		VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.9")}, Ports: []state.ServicePort{{Port: 80, TargetPort: 8080}},
		Workloads: []string{c.UID}, UseWaypoint: "gone", Origin: state.OriginConfig}
	c.UseWaypoint = ""
	s = state.Build(1, state.Input{Workloads: []*state.Workload{client, &c}, Services: []state.ServiceDecl{svc}})
	if r := DecideOutbound(s, ap("10.0.0.1:5000"), ap("10.96.0.9:80")); r.Kind != RouteDrop {
		t.Errorf("service naming an unknown waypoint: %+v, want a drop", r)
	}
}

// A call between two workloads of this host (same-host capture) is tunnelled
// from the caller's identity to the callee's, over HBONE to this host's own
// address; a workload calling its own address is delivered as without the mesh.
func TestSameHostRoutes(t *testing.T) {
	snap := testSnapshot()
	a, _ := snap.WorkloadByUID("local-a")
	r := DecideOutboundFrom(snap, a, ap("10.0.0.2:5000"), ap("10.0.0.2:8080"))
	if r.Kind != RouteHBONE || r.Source.String() != "spiffe://cluster.local/ns/default/sa/a" ||
		r.Gateway != ap("10.0.0.2:15008") || len(r.Expected) != 1 || r.Expected[0].String() != "spiffe://cluster.local/ns/default/sa/b" {
		t.Errorf("a to b on this host: route %+v, want HBONE from a to b at 10.0.0.2:15008", r)
	}
	r = DecideOutboundFrom(snap, a, ap("10.0.0.1:5000"), ap("10.0.0.1:8080"))
	if r.Kind != RoutePassthrough || r.Target != ap("10.0.0.1:8080") {
		t.Errorf("a to itself: route %+v, want passthrough to 10.0.0.1:8080", r)
	}
	r = DecideOutboundFrom(snap, a, ap("10.0.0.1:5000"), ap("10.0.0.9:8080"))
	if r.Kind != RouteHBONE {
		t.Errorf("a to a remote workload: route %s, want hbone", r.Kind)
	}
}
