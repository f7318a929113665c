package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

const allowAlice = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: only-alice
  namespace: default
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/alice"]
`

// denyBobToAlice refuses bob's calls to alice's port on h1.
const denyBobToAlice = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: no-bob-to-alice
  namespace: default
spec:
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bob"]
    to:
    - operation:
        ports: ["8081"]
`

// carolAddr is a second address of h1, carol's own.
const carolAddr = "10.77.0.111"

// Several workloads on h1, each with its own identity: alice and bob share
// h1's address (ports 8081 and 8082) and are recognised by their users (uid
// 2001 and 2002); carol has an address of her own. Processes of no declared
// workload are not captured. h2 serves 8080 and allows only alice; h1 denies
// bob's calls to alice, which bob makes on h1 itself.
func TestSeveralIdentitiesOnOneHost(t *testing.T) {
	lab.Require(t, "nginx", "curl", "setpriv", "nsenter")
	l := lab.New(t, 2)
	key := gossipKey(t, l)
	multi, server := l.Hosts[0], l.Hosts[1]
	multi.MustRun("ip", "addr", "add", carolAddr+"/24", "dev", "eth0")
	multi.StartNginx("hello from h1", 8080, 8081, 8082)
	server.StartNginx("hello from h2", 8080)
	for _, sa := range []string{"alice", "bob", "carol", "dave"} {
		multi.Issue(agentBin, "default", sa)
	}
	server.Issue(agentBin, "default", "server")
	policyDir := writePolicy(t, server, "only-alice.yaml", allowAlice)
	multiPolicyDir := writePolicy(t, multi, "no-bob-to-alice.yaml", denyBobToAlice)
	// dave is a "unit": a cgroup that does not exist yet when the agent starts.
	cgroupRoot := "/sys/fs/cgroup"
	if _, err := os.Stat(cgroupRoot + "/cgroup.controllers"); err != nil {
		cgroupRoot += "/unified" // a hybrid host: cgroup v2 beside v1
	}
	daveCgroup := fmt.Sprintf("aalab-%d-dave", os.Getpid())
	t.Cleanup(func() { os.Remove(filepath.Join(cgroupRoot, daveCgroup)) })
	multiAgent := multi.StartAgentWithHostSys(agentBin, lab.AgentConfig{Host: multi, Gossip: &lab.Gossip{KeyFile: key, Seed: multi}, Tables: fmt.Sprintf(`
[capture]
unmatched = "passthrough"
[[workload]]
name = "alice"
service_account = "alice"
addresses = [%[1]q]
ports = [8081]
user = "2001"
[[workload]]
name = "bob"
service_account = "bob"
addresses = [%[1]q]
ports = [8082]
user = "2002"
[[workload]]
name = "carol"
service_account = "carol"
addresses = [%[2]q]
[[workload]]
name = "dave"
service_account = "dave"
addresses = [%[1]q]
ports = [8083]
unit = "/%[3]s"
[policy]
dir = %[4]q
`, multi.Addr, carolAddr, daveCgroup, multiPolicyDir)}.String())
	serverAgent := server.StartAgent(agentBin, lab.AgentConfig{Host: server, Gossip: &lab.Gossip{KeyFile: key, Seed: multi}, Tables: fmt.Sprintf(`
[[workload]]
name = "server"
service_account = "server"
addresses = [%q]
[policy]
dir = %q
`, server.Addr, policyDir)}.String())
	multiAgent.WaitReady(t, 20*time.Second)
	serverAgent.WaitReady(t, 20*time.Second)
	waitWorkloads(t, serverAgent, 20*time.Second, func(ws []string) bool { return len(ws) == 5 }, "h2 learns h1's four workloads")
	waitWorkloads(t, multiAgent, 20*time.Second, func(ws []string) bool { return len(ws) == 5 }, "h1 learns h2's workload")
	if out := multi.MustRun(agentBin, "workloads"); !strings.Contains(out, "user 2001 (uid 2001) -> outbound port 15101") ||
		!strings.Contains(out, "user 2002 (uid 2002) -> outbound port 15102") || !strings.Contains(out, "source address") {
		t.Errorf("workloads does not say how each local workload is recognised:\n%s", out)
	}

	url := fmt.Sprintf("http://%s:8080/", server.Addr)
	as := func(uid string) (string, error) {
		return multi.Run(lab.Timeout(10*time.Second), "setpriv", "--reuid="+uid, "--regid="+uid, "--clear-groups",
			"curl", "-sS", "--max-time", "5", url)
	}
	if out, err := as("2001"); err != nil || !strings.Contains(out, "hello from h2") {
		t.Fatalf("alice (uid 2001) -> h2: %v %q", err, out)
	}
	if out, err := as("2002"); err == nil {
		t.Fatalf("bob (uid 2002) reached h2, which allows only alice: %q", out)
	}
	alice := map[string]string{"source_principal": "spiffe://cluster.local/ns/default/sa/alice", "reporter": "destination"}
	bob := map[string]string{"source_principal": "spiffe://cluster.local/ns/default/sa/bob", "response_flags": "DENY"}
	deadline := time.Now().Add(5 * time.Second)
	for {
		metrics := scrape(t, server)
		opened, ok1 := metricValue(t, metrics, "istio_tcp_connections_opened_total", alice)
		denied, ok2 := metricValue(t, metrics, "istio_tcp_connections_failed_total", bob)
		if ok1 && ok2 && opened >= 1 && denied >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("h2's metrics do not show alice allowed and bob denied:\n%s", grepIstio(metrics))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// dave's unit starts: within the watch interval its processes are
	// recognised, and present dave's identity (which h2 refuses).
	multiAgent.WaitLog(t, "workload unit not running", 5*time.Second)
	if err := os.Mkdir(filepath.Join(cgroupRoot, daveCgroup), 0o755); err != nil {
		t.Fatal(err)
	}
	multiAgent.WaitLog(t, "capture rules updated: a recognised unit started", 10*time.Second)
	inUnit := exec.Command("nsenter", "--net=/run/netns/"+multi.NS, "sh", "-c",
		fmt.Sprintf("echo $$ > %s/%s/cgroup.procs && exec curl -sS --max-time 5 %s", cgroupRoot, daveCgroup, url))
	if out, err := inUnit.CombinedOutput(); err == nil {
		t.Errorf("dave's unit reached h2, which allows only alice: %q", out)
	}
	daveDenied := map[string]string{"source_principal": "spiffe://cluster.local/ns/default/sa/dave", "response_flags": "DENY"}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if v, ok := metricValue(t, scrape(t, server), "istio_tcp_connections_failed_total", daveDenied); ok && v >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("h2's metrics do not show dave's unit denied:\n%s", grepIstio(scrape(t, server)))
		}
	}

	sameHost(t, multi, multiAgent, cgroupRoot+"/"+daveCgroup)

	// A process of no declared workload is not captured ("passthrough"): h2
	// sees it in plaintext, without an identity, and its policy refuses it.
	if out, err := as("2003"); err == nil {
		t.Errorf("an uncaptured process reached h2 past its ALLOW-only-alice policy: %q", out)
	}
	waitCount(t, serverAgent, 1, 5*time.Second, "direction=inbound_plaintext", fmt.Sprintf("src=%s:", multi.Addr), "response_flags=DENY")

	// h2 reaches each of h1's workloads; its client verifies each one's
	// identity, so a success means h1 presented the right certificate.
	for _, tc := range []struct{ addr, sa string }{
		{carolAddr + ":8080", "carol"}, {multi.Addr.String() + ":8081", "alice"}, {multi.Addr.String() + ":8082", "bob"},
	} {
		mustCurl(t, server, "http://"+tc.addr+"/", "hello from h1")
		// Each workload's application sees its real client, h2, whichever way h1 tells its workloads apart.
		seen := fmt.Sprintf("%s %d", server.Addr, netip.MustParseAddrPort(tc.addr).Port())
		if log := accessLog(multi, hasLine(seen)); !slices.Contains(log, seen) {
			t.Errorf("h2 -> %s (%s): h1's nginx saw the clients %v, want h2's address", tc.addr, tc.sa, log)
		}
		waitCount(t, serverAgent, 1, 5*time.Second, "direction=outbound", "dst="+tc.addr, "route=hbone",
			"dst_identity=spiffe://cluster.local/ns/default/sa/"+tc.sa, "response_flags=-")
		waitCount(t, multiAgent, 1, 5*time.Second, "direction=inbound", "dst="+tc.addr,
			"dst_identity=spiffe://cluster.local/ns/default/sa/"+tc.sa, "response_flags=-")
	}
}

// writePolicy writes one policy file into h's policy directory, which it returns.
func writePolicy(t *testing.T, h *lab.Host, name, yaml string) string {
	t.Helper()
	dir := filepath.Join(h.Dir, "policies")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// sameHost checks calls between h1's workloads, made on h1: bob's call to
// alice carries bob's identity, so h1's policy refuses it and alice's
// inbound metrics count it; dave's (a unit's) gets through with dave's
// identity; bob's call to his own port is delivered as without the mesh, and a
// process of no workload is not captured.
func sameHost(t *testing.T, h1 *lab.Host, agent *lab.Agent, daveCgroup string) {
	t.Helper()
	alice := fmt.Sprintf("http://%s:8081/", h1.Addr)
	curl := func(uid, url string) (string, error) {
		return h1.Run(lab.Timeout(10*time.Second), "setpriv", "--reuid="+uid, "--regid="+uid, "--clear-groups",
			"curl", "-sS", "--max-time", "5", url)
	}
	if out, err := curl("2002", alice); err == nil {
		t.Errorf("bob reached alice on their own host, past h1's policy that denies him: %q", out)
	}
	inUnit := exec.Command("nsenter", "--net=/run/netns/"+h1.NS, "sh", "-c",
		fmt.Sprintf("echo $$ > %s/cgroup.procs && exec curl -sS --max-time 5 %s", daveCgroup, alice))
	if out, err := inUnit.CombinedOutput(); err != nil || !strings.Contains(string(out), "hello from h1") {
		t.Errorf("dave's unit -> alice on the same host: %v %q", err, out)
	}
	for _, uid := range []string{"2002", "2003"} { // bob to himself; a process of no workload
		if out, err := curl(uid, fmt.Sprintf("http://%s:8082/", h1.Addr)); err != nil || !strings.Contains(out, "hello from h1") {
			t.Errorf("uid %s -> bob's port on the same host: %v %q", uid, err, out)
		}
	}
	bobsOwn := fmt.Sprintf("dst=%s:8082", h1.Addr)
	waitCount(t, agent, 1, 5*time.Second, "direction=outbound", bobsOwn, "route=passthrough")
	if n := countLines(agent.Log(), bobsOwn, "route=hbone"); n != 0 {
		t.Errorf("bob's call to his own port went through a tunnel (%d access log lines)", n)
	}
	principal := func(sa string) string { return "spiffe://cluster.local/ns/default/sa/" + sa }
	bobDenied := map[string]string{"reporter": "destination", "source_principal": principal("bob"),
		"destination_principal": principal("alice"), "response_flags": "DENY"}
	daveAllowed := map[string]string{"reporter": "destination", "source_principal": principal("dave"),
		"destination_principal": principal("alice")}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		metrics := scrape(t, h1)
		denied, ok1 := metricValue(t, metrics, "istio_tcp_connections_failed_total", bobDenied)
		opened, ok2 := metricValue(t, metrics, "istio_tcp_connections_opened_total", daveAllowed)
		if ok1 && ok2 && denied >= 1 && opened >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("h1's metrics do not show bob denied and dave allowed by alice:\n%s", grepIstio(metrics))
		}
	}
}
