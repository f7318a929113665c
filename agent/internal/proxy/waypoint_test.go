package proxy

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// The waypoint accepts only targets it manages: never an open proxy.
func TestWaypointManagesOnlyItsScope(t *testing.T) {
	ns := wp("ns-wp", "", "10.0.0.50")
	snap := meshSnapshot(ns)
	cases := []struct {
		target string
		ok     bool
		why    string
	}{
		{"10.0.0.11:8080", true, "a captured workload of its namespace"},
		{"10.96.0.1:9080", true, "a service of its namespace"},
		{"10.96.0.1:80", false, "a port the service does not have"},
		{"10.0.0.12:8080", false, "an uncaptured workload (no waypoint)"},
		{"10.0.0.13:80", false, "a workload of another namespace"},
		{"10.0.0.99:80", false, "an unknown address"},
		{"10.0.0.1:8080", false, "a workload of its namespace that names no waypoint"},
	}
	for _, tc := range cases {
		wt, err := managedTarget(snap, ns, netip.MustParseAddrPort(tc.target))
		if (err == nil) != tc.ok {
			t.Errorf("%s (%s): managed = %v, err %v", tc.target, tc.why, err == nil, err)
		}
		if err != nil && !strings.Contains(err.Error(), "waypoint default/ns-wp") && !strings.Contains(err.Error(), "has no port") {
			t.Errorf("%s: error does not name the waypoint: %v", tc.target, err)
		}
		if err == nil && wt.svc == nil && wt.dst == nil {
			t.Errorf("%s: accepted without a target", tc.target)
		}
	}
	// A service-account waypoint manages only its account's workloads, not
	// the rest of the namespace.
	sa := wp("sa-wp", "reviews", "10.0.0.51")
	snap = meshSnapshot(sa)
	if _, err := managedTarget(snap, sa, netip.MustParseAddrPort("10.0.0.11:8080")); err != nil {
		t.Errorf("its account's workload refused: %v", err)
	}
	if _, err := managedTarget(snap, sa, netip.MustParseAddrPort("10.0.0.1:8080")); err == nil {
		t.Error("a workload of another account accepted")
	}
	// A service not bound to it is not its own, even with an endpoint it
	// serves: clients reach that endpoint directly (spec/routing.md).
	if _, err := managedTarget(snap, sa, netip.MustParseAddrPort("10.96.0.1:9080")); err == nil || !strings.Contains(err.Error(), "is not bound to waypoint default/sa-wp") {
		t.Errorf("a service not bound to the waypoint: %v", err)
	}
}

// Under hairpin enforcement, an HBONE caller of a waypoint-enabled local
// workload must be its waypoint (or its service's); under policy, anyone may.
func TestBypassedWaypoint(t *testing.T) {
	ns := wp("ns-wp", "", "10.0.0.50")
	snap := meshSnapshot(ns)
	r1, _ := snap.WorkloadByAddr(netip.MustParseAddr("10.0.0.11"))
	mode := "hairpin"
	hairpin := spiffeid.RequireFromString("spiffe://cluster.local/ns/mesh/sa/hairpin")
	h := &InboundHBONE{d: &Deps{Hairpin: func() (spiffeid.ID, bool) { return hairpin, mode == "hairpin" }}}
	client := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/client")
	waypoint := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/ns-wp")
	if err := h.bypassed(snap, r1, client); err == nil || !strings.Contains(err.Error(), "bypassed waypoint") {
		t.Errorf("a client that went around the waypoint: %v", err)
	}
	if err := h.bypassed(snap, r1, waypoint); err != nil {
		t.Errorf("the waypoint itself refused: %v", err)
	}
	mode = "policy"
	if err := h.bypassed(snap, r1, client); err != nil {
		t.Errorf("policy enforcement refused a direct caller: %v", err)
	}
}

// The waypoint authorizes the tunnel's peer, its identity and address, and
// never takes the caller from `forwarded`, whoever sends it: not even a peer
// presenting the target's own identity (the old hairpin), which would let a
// node choose the address policies see and make its client anonymous.
func TestWaypointNeverTakesForwarded(t *testing.T) {
	api := gossiped("api", "prod", "api", state.TunnelHBONE, "10.0.0.11")
	api.UseWaypoint = "waypoint"
	snap := state.Build(1, state.Input{Workloads: []*state.Workload{api}, Waypoints: prodWaypoints()})
	own, err := api.Identity()
	if err != nil {
		t.Fatal(err)
	}
	other := spiffeid.RequireFromString("spiffe://cluster.local/ns/prod/sa/client")
	for _, peer := range []spiffeid.ID{own, other} {
		wh := newWaypointHarness(snap)
		req := &hbone.Request{PeerIdentity: peer, ForwardedFor: ap("192.0.2.7:40000"),
			LocalAddr: ap("10.0.0.50:15008"), RemoteAddr: ap("10.0.0.1:40000"),
			Target: hbone.Authority{Addr: ap("10.0.0.11:8080"), Port: 8080}}
		d := wh.h.Authorize(context.Background(), req)
		if d.Refuse != hbone.FlagNone {
			t.Fatalf("peer %s refused: %v", peer, d.Err)
		}
		tag := d.Tag.(*inboundTag)
		tag.untrack()
		if tag.src != ap("10.0.0.1:40000") {
			t.Errorf("peer %s: the waypoint took the caller as %v, want the tunnel's peer 10.0.0.1:40000", peer, tag.src)
		}
		if _, err := d.Dial(context.Background(), d.Target); err == nil || err.Error() != "recorded" {
			t.Fatalf("dial: %v", err)
		}
		if got := wh.tunnels.got[0].Client; got != ap("10.0.0.1:40000") {
			t.Errorf("peer %s: forwarded on as %v, want the peer", peer, got)
		}
	}
}
