package proxy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
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
	// A service-account waypoint manages only its account's workloads, and
	// a service through them, not the rest of the namespace.
	sa := wp("sa-wp", "reviews", "10.0.0.51")
	snap = meshSnapshot(sa)
	if _, err := managedTarget(snap, sa, netip.MustParseAddrPort("10.0.0.11:8080")); err != nil {
		t.Errorf("its account's workload refused: %v", err)
	}
	if _, err := managedTarget(snap, sa, netip.MustParseAddrPort("10.0.0.1:8080")); err == nil {
		t.Error("a workload of another account accepted")
	}
	if _, err := managedTarget(snap, sa, netip.MustParseAddrPort("10.96.0.1:9080")); err != nil {
		t.Errorf("a service with one of its workloads refused: %v", err)
	}
}

// Under hairpin enforcement, an HBONE caller of a waypoint-enabled local
// workload must be its waypoint (or its service's); under policy, anyone may.
func TestBypassedWaypoint(t *testing.T) {
	ns := wp("ns-wp", "", "10.0.0.50")
	snap := meshSnapshot(ns)
	r1, _ := snap.WorkloadByAddr(netip.MustParseAddr("10.0.0.11"))
	mode := "hairpin"
	h := &InboundHBONE{d: &Deps{Enforcement: func() string { return mode }}}
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

// Only a hairpin (the target's own node, presenting the target's identity,
// with the plaintext client in `forwarded`) makes the waypoint take the
// caller from `forwarded`, and then without identity; anyone else's header
// is ignored, so it cannot choose the source address policies see.
func TestHairpinnedOnlyFromTheTargetsNode(t *testing.T) {
	ns := wp("ns-wp", "", "10.0.0.50")
	snap := meshSnapshot(ns)
	wt, err := managedTarget(snap, ns, netip.MustParseAddrPort("10.0.0.11:8080"))
	if err != nil {
		t.Fatal(err)
	}
	own, err := wt.dst.Identity()
	if err != nil {
		t.Fatal(err)
	}
	other := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/client")
	fwd := netip.MustParseAddrPort("192.0.2.7:40000")
	svc, err := managedTarget(snap, ns, netip.MustParseAddrPort("10.96.0.1:9080"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		why  string
		req  hbone.Request
		wt   waypointTarget
		want bool
	}{
		{"the target's node with a client", hbone.Request{PeerIdentity: own, ForwardedFor: fwd}, wt, true},
		{"another caller's forwarded", hbone.Request{PeerIdentity: other, ForwardedFor: fwd}, wt, false},
		{"the target's identity without forwarded", hbone.Request{PeerIdentity: own}, wt, false},
		{"a service target", hbone.Request{PeerIdentity: own, ForwardedFor: fwd}, svc, false},
	}
	for _, tc := range cases {
		if got := hairpinned(&tc.req, tc.wt); got != tc.want {
			t.Errorf("%s: hairpinned = %v, want %v", tc.why, got, tc.want)
		}
	}
}
