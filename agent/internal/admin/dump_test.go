package admin

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/xds"
)

// The CLI reads /config_dump into the very type the daemon writes: every field the daemon fills must come back
// as it went (a field that does not would be silently wrong in `status`, `peers` or `doctor`).
func TestDumpRoundTrips(t *testing.T) {
	d := richDump(t)
	first, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var back Dump
	if err := json.Unmarshal(first, &back); err != nil {
		t.Fatalf("the CLI cannot read what the daemon writes: %v", err)
	}
	second, err := json.Marshal(back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Errorf("the dump changed on its way through the CLI:\nwritten %s\nread    %s", first, second)
	}
	for _, section := range []string{`"drainTimeout":"7s"`, `"interval":"3s"`, `"state":"alive"`, `"kind":"AuthorizationPolicy"`, `"serviceConflicts":[{"service":"shop/web"`} {
		if !bytes.Contains(first, []byte(section)) {
			t.Errorf("the test's dump lacks %s: it no longer covers that section", section)
		}
	}
}

// richDump fills every section of a dump the way the daemon does, from real configuration, policies and state.
func richDump(t *testing.T) Dump {
	t.Helper()
	cfg, err := config.Parse("t.toml", []byte(`
[node]
name = "vm-1"
drain_timeout = "7s"
[gossip]
enabled = true
join = ["10.0.0.2:7946"]
[[workload]]
name = "web"
namespace = "shop"
service_account = "web"
addresses = ["10.0.0.1"]
labels = { app = "web" }
[workload.health]
kind = "tcp"
port = 8080
interval = "3s"
timeout = "1s"
[[service]]
name = "web"
namespace = "shop"
vips = ["240.240.0.1"]
ports = [{ port = 80, target_port = 8080 }]
workloads = ["web"]
`))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	policies := `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/sleep"]}}], to: [{operation: {ports: ["8080"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: at-waypoint, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}]
  rules: [{from: [{source: {namespaces: [shop]}}]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}, portLevelMtls: {"9090": {mode: PERMISSIVE}}}
`
	if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(policies), 0o644); err != nil {
		t.Fatal(err)
	}
	set, _, err := policy.Load(dir, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := state.InputFromConfig(cfg)
	in.Services = append(in.Services, state.ServiceDecl{Node: "vm-2", Name: "web", Namespace: "shop",
		Hostname: "web.shop.svc.cluster.local", VIPs: []netip.Addr{netip.MustParseAddr("240.240.0.1")},
		Ports: []state.ServicePort{{Port: 81, TargetPort: 8081}}})
	snap := state.Build(1, in)
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	d := Dump{Version: "test", Uptime: "1m0s", Ready: false, Waiting: []string{"gossip"}, Config: cfg,
		Certificates: []identity.CertInfo{{Kind: "workload", Identity: "spiffe://cluster.local/ns/shop/sa/web", Serial: "1f",
			NotBefore: now, NotAfter: now.Add(time.Hour)}},
		Workloads: snap.Workloads(), Recognition: map[string]string{"vm-1/shop/web": "address"},
		Conflicts: []state.Conflict{{Address: netip.MustParseAddr("10.0.0.9"), Winner: "a", Loser: "b", Reason: "unproven"}},
		Waypoints: snap.Waypoints(), ServiceConflicts: snap.ServiceConflicts(),
		WaypointConflicts: []state.WaypointConflict{{Waypoint: "shop/waypoint", Node: "vm-3", Identity: "spiffe://x", Reason: "r"}},
		GossipRejected:    map[string]uint64{"unsigned": 2}, GossipSettled: true,
		Capture:  Capture{Enabled: true, Installed: true, Table: "inet ambient_agent", Chains: []string{"outbound"}},
		Policies: set.Summary(),
		Peers: []discovery.Member{{Name: "vm-2", Address: netip.MustParseAddrPort("10.0.0.2:7946"), State: "alive", Since: now,
			RecordVersion: 3, Advertised: 3, Workloads: 1, AgentVersion: "test"}},
		Istiod: &xds.Status{Address: "istiod:15012", Connected: true, Since: now, Addresses: 4, Policies: 1},
	}
	for _, svc := range snap.Services() {
		d.Services = append(d.Services, Service{Service: svc, Endpoints: []Endpoint{{Workload: "vm-1/shop/web",
			Addresses: []string{"10.0.0.1"}, Healthy: true, Capacity: 1, Ports: []state.ServicePort{{Port: 80, TargetPort: 8080}}}}})
	}
	return d
}
