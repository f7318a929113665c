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

// principal is the SPIFFE ID of service account sa in namespace default.
func principal(sa string) string { return "spiffe://cluster.local/ns/default/sa/" + sa }

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
	if out, err := curlAs(multi, "2001", url); err != nil || !strings.Contains(out, "hello from h2") {
		t.Fatalf("alice (uid 2001) -> h2: %v %q", err, out)
	}
	if out, err := curlAs(multi, "2002", url); err == nil {
		t.Fatalf("bob (uid 2002) reached h2, which allows only alice: %q", out)
	}
	waitCounted(t, server, "alice allowed and bob denied",
		counted{"istio_tcp_connections_opened_total", map[string]string{"source_principal": principal("alice"), "reporter": "destination"}},
		counted{"istio_tcp_connections_failed_total", map[string]string{"source_principal": principal("bob"), "response_flags": "DENY"}})

	// dave's unit starts: within the watch interval its processes are
	// recognised, and present dave's identity (which h2 refuses).
	multiAgent.WaitLog(t, "workload unit not running", 5*time.Second)
	if err := os.Mkdir(filepath.Join(cgroupRoot, daveCgroup), 0o755); err != nil {
		t.Fatal(err)
	}
	multiAgent.WaitLog(t, "capture rules updated: a recognised unit started", 10*time.Second)
	if out, err := curlInCgroup(multi, filepath.Join(cgroupRoot, daveCgroup), url); err == nil {
		t.Errorf("dave's unit reached h2, which allows only alice: %q", out)
	}
	waitCounted(t, server, "dave's unit denied",
		counted{"istio_tcp_connections_failed_total", map[string]string{"source_principal": principal("dave"), "response_flags": "DENY"}})

	sameHost(t, multi, multiAgent, cgroupRoot+"/"+daveCgroup)

	// A process of no declared workload is not captured ("passthrough"): h2
	// sees it in plaintext, without an identity, and its policy refuses it.
	if out, err := curlAs(multi, "2003", url); err == nil {
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
	if out, err := curlAs(h1, "2002", alice); err == nil {
		t.Errorf("bob reached alice on their own host, past h1's policy that denies him: %q", out)
	}
	if out, err := curlInCgroup(h1, daveCgroup, alice); err != nil || !strings.Contains(out, "hello from h1") {
		t.Errorf("dave's unit -> alice on the same host: %v %q", err, out)
	}
	for _, uid := range []string{"2002", "2003"} { // bob to himself; a process of no workload
		if out, err := curlAs(h1, uid, fmt.Sprintf("http://%s:8082/", h1.Addr)); err != nil || !strings.Contains(out, "hello from h1") {
			t.Errorf("uid %s -> bob's port on the same host: %v %q", uid, err, out)
		}
	}
	bobsOwn := fmt.Sprintf("dst=%s:8082", h1.Addr)
	waitCount(t, agent, 1, 5*time.Second, "direction=outbound", bobsOwn, "route=passthrough")
	if n := countLines(agent.Log(), bobsOwn, "route=hbone"); n != 0 {
		t.Errorf("bob's call to his own port went through a tunnel (%d access log lines)", n)
	}
	waitCounted(t, h1, "bob denied and dave allowed by alice",
		counted{"istio_tcp_connections_failed_total", map[string]string{"reporter": "destination", "source_principal": principal("bob"),
			"destination_principal": principal("alice"), "response_flags": "DENY"}},
		counted{"istio_tcp_connections_opened_total", map[string]string{"reporter": "destination", "source_principal": principal("dave"),
			"destination_principal": principal("alice")}})
}

// curlAs fetches url on h as user and group uid.
func curlAs(h *lab.Host, uid, url string) (string, error) {
	return h.Run(lab.Timeout(10*time.Second), "setpriv", "--reuid="+uid, "--regid="+uid, "--clear-groups",
		"curl", "-sS", "--max-time", "5", url)
}

// curlInCgroup fetches url on h from a process in the cgroup v2 directory cgroup (a unit's).
func curlInCgroup(h *lab.Host, cgroup, url string) (string, error) {
	out, err := exec.Command("nsenter", "--net=/run/netns/"+h.NS, "sh", "-c",
		fmt.Sprintf("echo $$ > %s/cgroup.procs && exec curl -sS --max-time 5 %s", cgroup, url)).CombinedOutput()
	return string(out), err
}
