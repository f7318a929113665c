package proxy

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
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
	hairpin := spiffeid.RequireFromString("spiffe://cluster.local/ns/mesh/sa/hairpin")
	h := &InboundHBONE{d: &Deps{}}
	h.d.Apply(Settings{Hairpin: true, HairpinIdentity: hairpin})
	client := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/client")
	waypoint := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/ns-wp")
	if err := h.bypassed(snap, r1, client); err == nil || !strings.Contains(err.Error(), "bypassed waypoint") {
		t.Errorf("a client that went around the waypoint: %v", err)
	}
	if err := h.bypassed(snap, r1, waypoint); err != nil {
		t.Errorf("the waypoint itself refused: %v", err)
	}
	h.d.Apply(Settings{HairpinIdentity: hairpin}) // a reload to policy enforcement
	if err := h.bypassed(snap, r1, client); err != nil {
		t.Errorf("policy enforcement refused a direct caller: %v", err)
	}
}

// The waypoint authorizes the tunnel's peer, its identity and address, and
// never takes the caller from `forwarded`, whoever sends it, but in one case:
// the target workload's own node presenting the workload's identity (an
// agent before hairpin identities hairpinning a plaintext client). That
// client is anonymous, never the workload: a rule admitting the workload's
// namespace must not admit an outside client during an upgrade.
func TestWaypointNeverTakesForwarded(t *testing.T) {
	api := gossiped("api", "prod", "api", state.TunnelHBONE, "10.0.0.11")
	api.UseWaypoint = "waypoint"
	snap := state.Build(1, state.Input{Workloads: []*state.Workload{api}, Waypoints: prodWaypoints()})
	own, err := api.Identity()
	if err != nil {
		t.Fatal(err)
	}
	other := spiffeid.RequireFromString("spiffe://cluster.local/ns/prod/sa/client")
	for _, tc := range []struct {
		peer      spiffeid.ID
		caller    string
		anonymous bool
	}{{other, "10.0.0.1:40000", false}, {own, "192.0.2.7:40000", true}} {
		wh := newWaypointHarness(snap)
		req := &hbone.Request{PeerIdentity: tc.peer, ForwardedFor: ap("192.0.2.7:40000"),
			LocalAddr: ap("10.0.0.50:15008"), RemoteAddr: ap("10.0.0.1:40000"),
			Target: hbone.Authority{Addr: ap("10.0.0.11:8080"), Port: 8080}}
		call, rec, err := wh.decide(req)
		if err != nil {
			t.Fatalf("peer %s refused: %v", tc.peer, err)
		}
		if rec.src != ap(tc.caller) || rec.anonymous != tc.anonymous {
			t.Errorf("peer %s: the waypoint took the caller as %v (anonymous %v), want %s (anonymous %v)",
				tc.peer, rec.src, rec.anonymous, tc.caller, tc.anonymous)
		}
		if _, err := wh.h.forwardCall(context.Background(), snap, call, rec); err == nil || err.Error() != "recorded" {
			t.Fatalf("dial: %v", err)
		}
		if got := wh.tunnels.got[0].ForwardedFor; got != ap(tc.caller) {
			t.Errorf("peer %s: forwarded on as %v, want %s", tc.peer, got, tc.caller)
		}
	}
	// Policy sees the old-style hairpin's client without identity: a DENY of
	// everyone but the workload's own principal refuses it.
	deny := `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-api, namespace: prod}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}]
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/prod/sa/api"]}}]}]
`
	set := compilePolicies(t, deny)
	wh := newWaypointHarness(snap)
	wh.h.d.Policy = func() *policy.Set { return set }
	req := &hbone.Request{PeerIdentity: own, ForwardedFor: ap("192.0.2.7:40000"), LocalAddr: ap("10.0.0.50:15008"),
		RemoteAddr: ap("10.0.0.1:40000"), Target: hbone.Authority{Addr: ap("10.0.0.11:8080"), Port: 8080}}
	if _, _, err := wh.decide(req); hbone.FlagOf(err) != hbone.FlagDenied {
		t.Errorf("an old-style hairpin was authorized as the workload's principal: %v", err)
	}
}

// compilePolicies loads YAML policies as the agent does (a directory of files).
func compilePolicies(t testing.TB, yaml string) *policy.Set {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	set, _, err := policy.Load(dir, policy.Options{}) // a targetRefs policy comes with a note that a waypoint enforces it
	if err != nil || len(set.WaypointPolicies()) == 0 {
		t.Fatalf("policy: %v, %d waypoint policies loaded", err, len(set.WaypointPolicies()))
	}
	return set
}
