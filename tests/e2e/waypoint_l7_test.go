package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// echoBackend is a host's workload and the services it backs: echo (the waypoint's, HTTP) and its own
// version's service, echo-vN.
const echoBackend = `
[[workload]]
name = %[1]q
service_account = "echo"
addresses = [%[2]q]
[[service]]
name = "echo"
use_waypoint = "wp"
ports = [{ port = 80, target_port = 8080, app_protocol = "http" }, { port = 81, target_port = 8080 }]
workloads = [%[1]q]
[[service]]
name = %[3]q
ports = [{ port = 80, target_port = 8080, app_protocol = "http" }]
workloads = [%[1]q]
%[4]s`

// streamServices are echo-v1's host's gRPC and websocket services, through the waypoint.
const streamServices = `[[service]]
name = "grpc"
use_waypoint = "wp"
ports = [{ port = 9000, target_port = 9000, app_protocol = "grpc" }]
workloads = ["echo1"]
[[service]]
name = "ws"
use_waypoint = "wp"
ports = [{ port = 9001, target_port = 9001, app_protocol = "http" }]
workloads = ["echo1"]
`

// l7Peer is tests/lab/l7peer: grpc-go's interop test service and client, and a websocket echo.
var l7Peer = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp(scratch, "ambient-l7peer-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "l7peer")
	cmd := exec.Command("go", "build", "-o", bin, "./tests/lab/l7peer")
	cmd.Dir = lab.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building l7peer: %w\n%s", err, out)
	}
	return bin, nil
})

// The seed's HTTPRoute: every request to echo goes to echo-v1.
const seedRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: echo
  namespace: default
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: echo
  rules:
  - backendRefs:
    - name: echo-v1
      port: 80
`

const weightedRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
  - matches: [{headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: echo-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /missing-only}}]
    backendRefs: [{name: echo-v1, port: 80}]
    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-route, value: missing}]}}]
  - matches: [{path: {type: PathPrefix, value: /}}]
    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-route, value: weighted}]}}]
    backendRefs:
    - {name: echo-v1, port: 80, weight: 90}
    - {name: echo-v2, port: 80, weight: 10}
`

// TestWaypointL7: h1 a captured client, h2 and h3 the two versions of echo, h4 the namespace's waypoint. echo's
// port is HTTP, so the waypoint serves it at L7: without a route it balances over both versions; the seed's
// HTTPRoute sends every request to echo-v1; a weighted route splits 90/10 over 500 requests on kept-alive
// connections (each request routed on its own); a header match takes the canary; a route with only some paths
// answers the others 404; a mirror copies requests to echo-v2; h2c clients are served too; a DENY on /admin at the waypoint answers 403 there
// (normalized paths included) and serves the rest; a port of echo that is not HTTP stays L4; the waypoint
// counts requests by response code.
func TestWaypointL7(t *testing.T) {
	lab.Require(t, "nginx", "curl")
	l := lab.New(t, 4)
	client, v1, v2, wp := l.Hosts[0], l.Hosts[1], l.Hosts[2], l.Hosts[3]
	for _, h := range l.Hosts {
		h.DefaultRoute()
	}
	v1.StartNginx("echo-v1", 8080)
	v2nginx := v2.StartNginx("echo-v2", 8080)
	client.Issue(agentBin, "default", "client")
	v1.Issue(agentBin, "default", "echo")
	v2.Issue(agentBin, "default", "echo")
	wp.Issue(agentBin, "default", "wp")
	key := gossipKey(t, l)
	routesDir := filepath.Join(wp.Dir, "policies")
	if err := os.MkdirAll(routesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	start := func(h *lab.Host, body string) *lab.Agent {
		a := h.StartAgent(agentBin, lab.AgentConfig{Host: h, Gossip: &lab.Gossip{KeyFile: key, Seed: client}, Tables: body}.String())
		a.WaitReady(t, 20*time.Second)
		return a
	}
	clientAgent := start(client, fmt.Sprintf("[[workload]]\nname = \"client\"\nservice_account = \"client\"\naddresses = [%q]\n", client.Addr))
	peer, err := l7Peer()
	if err != nil {
		t.Fatal(err)
	}
	v1.Start("grpc server", peer, "grpc-server", ":9000")
	v1.Start("websocket server", peer, "ws-server", ":9001")
	start(v1, fmt.Sprintf(echoBackend, "echo1", v1.Addr, "echo-v1", streamServices))
	start(v2, fmt.Sprintf(echoBackend, "echo2", v2.Addr, "echo-v2", ""))
	wpAgent := start(wp, fmt.Sprintf(waypointBody, "wp", "wp", "", wp.Addr, routesDir))
	var vip string
	waitMesh(t, clientAgent, gossipConverges, "echo and its waypoint", func(m meshDump) bool {
		vip = m.serviceVIP("echo")
		return vip != "" && len(m.Waypoints) == 1
	})
	waitMesh(t, wpAgent, gossipConverges, "the waypoint knows echo's versions", func(m meshDump) bool {
		return m.serviceVIP("echo-v1") != "" && m.serviceVIP("echo-v2") != "" && m.serviceVIP("echo") != ""
	})
	url := fmt.Sprintf("http://%s/", vip)

	// fetch asks for url n times on one kept-alive connection (one tunnel) and counts the bodies.
	fetch := func(n int, args ...string) map[string]int {
		t.Helper()
		cmd := append([]string{"-sS", "--max-time", "60"}, args...)
		for range n {
			cmd = append(cmd, url)
		}
		out, err := client.Run(lab.Timeout(90*time.Second), "curl", cmd...)
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		counts := map[string]int{}
		for _, line := range strings.Fields(out) {
			counts[line]++
		}
		return counts
	}
	setRoute := func(doc string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(routesDir, "route.yaml"), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		wpAgent.Reload(t)
	}

	// No route: the service itself, both versions.
	if got := fetch(40); got["echo-v1"] == 0 || got["echo-v2"] == 0 || got["echo-v1"]+got["echo-v2"] != 40 {
		t.Errorf("echo without a route: %v, want both versions", got)
	}
	waitCount(t, wpAgent, 40, 5*time.Second, "msg=access", "route=waypoint_http", "dst_service=echo.default.svc.cluster.local", "response_code=200")

	// The seed's route: all of echo to echo-v1.
	setRoute(seedRoute)
	if got := fetch(50); got["echo-v1"] != 50 {
		t.Errorf("the seed's route: %v, want 50 of echo-v1", got)
	}

	// 90/10 over 500 requests (sd 6.7: 425..475 is beyond 3.7 sd), the header canary, a 404.
	setRoute(weightedRoute)
	got := fetch(500)
	if got["echo-v1"] < 425 || got["echo-v1"] > 475 || got["echo-v1"]+got["echo-v2"] != 500 {
		t.Errorf("90/10 over 500 requests: %v", got)
	}
	if got := fetch(20, "-H", "x-canary: yes"); got["echo-v2"] != 20 {
		t.Errorf("the canary header: %v, want 20 of echo-v2", got)
	}
	out, err := client.Run(lab.Timeout(20*time.Second), "curl", "-sS", "-i", "--max-time", "10", url)
	if err != nil || !strings.Contains(strings.ToLower(out), "x-route: weighted") {
		t.Errorf("the response header filter: %v\n%s", err, out)
	}
	// h2c, prior knowledge: served at L7 as well, sent on to nginx over HTTP/1.1.
	// (One request per curl: curl 7.88 does not send a second request on a prior-knowledge connection; several
	// requests on one HTTP/2 tunnel are hbone.TestHijackServesHTTP2's.)
	for range 5 {
		if got := fetch(1, "--http2-prior-knowledge", "-H", "x-canary: yes"); got["echo-v2"] != 1 {
			t.Errorf("h2c with the canary header: %v, want echo-v2", got)
		}
	}
	waitCount(t, wpAgent, 5, 5*time.Second, "msg=access", "route=waypoint_http", "protocol=HTTP/2.0", "response_code=200")
	setRoute(strings.Replace(weightedRoute, "value: /}", "value: /only}", 1))
	out, err = client.Run(lab.Timeout(20*time.Second), "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", url)
	if err != nil || strings.TrimSpace(out) != "404" {
		t.Errorf("a path no rule matches: %q (%v), want 404", out, err)
	}

	// A mirror: the seed's route with a copy of each request to echo-v2, whose answers are dropped.
	before := len(v2.NginxAccessLog())
	setRoute(strings.Replace(seedRoute, "  - backendRefs:",
		"  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: echo-v2, port: 80}}}]\n    backendRefs:", 1))
	if got := fetch(20); got["echo-v1"] != 20 {
		t.Errorf("the mirrored route: %v, want 20 of echo-v1", got)
	}
	for range 5 { // HTTP/2 requests without a body: copies without one either
		if got := fetch(1, "--http2-prior-knowledge"); got["echo-v1"] != 1 {
			t.Errorf("a mirrored h2c request: %v, want echo-v1", got)
		}
	}
	mirrored := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if mirrored = len(v2.NginxAccessLog()) - before; mirrored >= 25 {
			break
		}
	}
	if mirrored != 25 {
		t.Errorf("echo-v2 got %d copies of the 25 mirrored requests", mirrored)
	}

	// A DENY on /admin at the waypoint (attached to its Gateway): 403 with Envoy's body there, / still served.
	setRoute(seedRoute)
	deny := `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp}]
  action: DENY
  rules: [{to: [{operation: {paths: [/admin], ports: ["80"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-x, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp}]
  action: AUDIT
  rules: [{to: [{operation: {paths: [/x/*]}}]}]
`
	if err := os.WriteFile(filepath.Join(routesDir, "deny.yaml"), []byte(deny), 0o644); err != nil {
		t.Fatal(err)
	}
	wpAgent.Reload(t)
	out, err = client.Run(lab.Timeout(20*time.Second), "curl", "-sS", "-w", " %{http_code}", "--max-time", "10", url+"admin")
	if err != nil || strings.Join(strings.Fields(out), " ") != "RBAC: access denied 403" {
		t.Errorf("/admin under the DENY: %q (%v), want Envoy's 403", out, err)
	}
	for _, p := range []string{"admin/", "x/../admin"} { // other paths, and one that normalizes to /admin
		out, _ = client.Run(lab.Timeout(20*time.Second), "curl", "-sS", "--path-as-is", "-w", " %{http_code}", "--max-time", "10", url+p)
		want := map[string]string{"admin/": "echo-v1 200", "x/../admin": "RBAC: access denied 403"}[p]
		if strings.Join(strings.Fields(out), " ") != want {
			t.Errorf("/%s under the DENY: %q, want %q", p, out, want)
		}
	}
	if got := fetch(5); got["echo-v1"] != 5 {
		t.Errorf("/ under the DENY: %v, want 5 of echo-v1", got)
	}
	// The AUDIT policy marks its requests in the access log and decides nothing.
	if out, err := client.Run(lab.Timeout(20*time.Second), "curl", "-sS", "--max-time", "10", url+"x/y"); err != nil || strings.TrimSpace(out) != "echo-v1" {
		t.Errorf("/x/y under the AUDIT policy: %q (%v), want echo-v1", out, err)
	}
	waitCount(t, wpAgent, 1, 5*time.Second, "msg=access", "path=/x/y", "response_code=200", "audit=default/audit-x")
	// An upgrade to h2c would carry requests past routing and authorization: refused.
	out, _ = client.Run(lab.Timeout(20*time.Second), "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
		"-H", "Connection: Upgrade, HTTP2-Settings", "-H", "Upgrade: h2c", "-H", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA", url)
	if strings.TrimSpace(out) != "403" {
		t.Errorf("an upgrade to h2c: %q, want 403", out)
	}
	// echo's port 81 is not HTTP: the waypoint stays L4 there (the DENY, for port 80, does not apply).
	out, err = client.Run(lab.Timeout(20*time.Second), "curl", "-sS", "--max-time", "10", fmt.Sprintf("http://%s:81/admin", vip))
	if err != nil || (strings.TrimSpace(out) != "echo-v1" && strings.TrimSpace(out) != "echo-v2") {
		t.Errorf("port 81: %q (%v)", out, err)
	}
	waitCount(t, wpAgent, 1, 5*time.Second, "msg=access", "route=waypoint", "dst="+vip+":81", "response_flags=-")

	// gRPC (h2c both ways, trailers) with a server-streaming call, and a websocket (HTTP/1.1 Upgrade), through the
	// waypoint at L7.
	var grpcVIP, wsVIP string
	waitMesh(t, clientAgent, gossipConverges, "the grpc and ws services", func(m meshDump) bool {
		grpcVIP, wsVIP = m.serviceVIP("grpc"), m.serviceVIP("ws")
		return grpcVIP != "" && wsVIP != ""
	})
	out, err = client.Run(lab.Timeout(30*time.Second), peer, "grpc-client", grpcVIP+":9000", "5")
	if err != nil || !strings.Contains(out, "unary 10") || !strings.Contains(out, "stream 4 104") || !strings.Contains(out, "stream done 5") {
		t.Errorf("gRPC through the waypoint: %v\n%s", err, out)
	}
	waitCount(t, wpAgent, 2, 5*time.Second, "msg=access", "route=waypoint_http", "protocol=HTTP/2.0", "dst_service=grpc.default.svc.cluster.local", "response_code=200")
	out, err = client.Run(lab.Timeout(30*time.Second), peer, "ws-client", fmt.Sprintf("ws://%s:9001/echo", wsVIP), "one", "two", "three")
	if err != nil || strings.Join(strings.Fields(out), " ") != "echo: one echo: two echo: three" {
		t.Errorf("a websocket through the waypoint: %v\n%s", err, out)
	}
	waitCount(t, wpAgent, 1, 5*time.Second, "msg=access", "route=waypoint_http", "path=/echo", "response_code=101")

	metrics := scrape(t, wp)
	// Each label set counts apart: echo-v1's 200s are the seed route's 50 and about 450 of the weighted 500.
	for code, want := range map[string]map[string]string{
		"200":      {"destination_service": "echo-v1.default.svc.cluster.local", "destination_workload": "echo1"},
		"404":      {},
		"403":      {"response_flags": "DENY"},
		"200 grpc": {"request_protocol": "grpc", "grpc_response_status": "0", "destination_service": "grpc.default.svc.cluster.local"},
	} {
		code, _, _ = strings.Cut(code, " ")
		want["reporter"], want["response_code"], want["source_principal"] = "waypoint", code, "spiffe://cluster.local/ns/default/sa/client"
		least := map[string]float64{"200": 400, "404": 1, "403": 2}[code]
		if want["request_protocol"] == "grpc" {
			least = 2
		}
		if v, ok := metricValue(t, metrics, "istio_requests_total", want); !ok || v < least {
			t.Errorf("istio_requests_total{response_code=%s} = %v, want at least %v:\n%s", code, v, least, grepIstio(metrics))
		}
	}

	// A TCPRoute on echo's port 81 (L4 at the waypoint): every connection to echo-v2's port 80.
	tcpRoute := `apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: echo-tcp, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 81}]
  rules: [{backendRefs: [{name: echo-v2, port: 80}]}]
`
	if err := os.WriteFile(filepath.Join(routesDir, "tcp.yaml"), []byte(tcpRoute), 0o644); err != nil {
		t.Fatal(err)
	}
	wpAgent.Reload(t)
	for range 10 {
		out, err := client.Run(lab.Timeout(20*time.Second), "curl", "-sS", "--max-time", "10", fmt.Sprintf("http://%s:81/", vip))
		if err != nil || strings.TrimSpace(out) != "echo-v2" {
			t.Errorf("port 81 under the TCPRoute: %q (%v), want echo-v2", out, err)
		}
	}

	// Istio's default retries: with echo-v2's server gone, requests to echo (no route: both versions) that are
	// sent to echo-v2 and refused there go again to echo-v1; none fails.
	setRoute("")
	v2nginx.Kill()
	if got := fetch(20); got["echo-v1"] != 20 {
		t.Errorf("echo with one version down: %v, want 20 of echo-v1 (retried)", got)
	}
}
