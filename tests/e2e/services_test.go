package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

const backendBody = `
[[workload]]
name = "reviews-%[1]s"
service_account = "reviews"
addresses = [%[2]q]
[workload.health]
kind = "tcp"
port = 9081
interval = "500ms"
timeout = "400ms"
unhealthy_threshold = 2
[[service]]
name = "reviews"
ports = [{ port = 9080, target_port = 8080 }]
workloads = ["reviews-%[1]s"]
`

// healthBound is the stated time for an endpoint with a failing check to
// leave rotation everywhere: interval x unhealthy_threshold + timeout of the
// check above, plus gossip's propagation (a second on these hosts) and slack
// for the shared CI machines.
const healthBound = 500*time.Millisecond*2 + 400*time.Millisecond + 5*time.Second

// A service backed by two hosts: the captured client resolves its hostname
// through the DNS proxy and its requests spread over both; when one backend's
// health check fails, all requests go to the other within healthBound, and
// come back when it passes again.
func TestServiceLoadBalancingAndHealth(t *testing.T) {
	lab.Require(t, "nginx", "curl", "nc")
	l := lab.New(t, 3)
	key := gossipKey(t, l)
	client, b1, b2 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	for _, h := range l.Hosts {
		h.DefaultRoute()
	}
	client.Issue(agentBin, "default", "client")
	var checks []*lab.Proc
	for _, b := range []*lab.Host{b1, b2} {
		b.Issue(agentBin, "default", "reviews")
		b.StartNginx("reviews from "+b.Name, 8080)
		checks = append(checks, b.Start("health", "nc", "-lk", "9081"))
		b.WaitListening(9081, 5*time.Second)
	}
	// The client's resolver points anywhere: captured DNS reaches the proxy.
	client.SetResolvConf("nameserver 192.0.2.53\n")
	agent := client.StartAgent(agentBin, lab.AgentConfig{Host: client, Gossip: &lab.Gossip{KeyFile: key, Seed: client}, Tables: fmt.Sprintf(`
[[workload]]
name = "client"
service_account = "client"
addresses = [%q]
[dns]
capture = true
upstreams = ["192.0.2.53"]
`, client.Addr)}.String())
	agent.WaitReady(t, 20*time.Second)
	for _, b := range []*lab.Host{b1, b2} {
		b.StartAgent(agentBin, lab.AgentConfig{Host: b, Gossip: &lab.Gossip{KeyFile: key, Seed: client}, Tables: fmt.Sprintf(backendBody, b.Name, b.Addr)}.String()).WaitReady(t, 20*time.Second)
	}
	m := waitMesh(t, agent, 30*time.Second, "service with both endpoints", func(m meshDump) bool {
		return len(m.Services) == 1 && len(m.Services[0].Endpoints) == 2
	})
	vip := m.serviceVIP("reviews")
	if !strings.HasPrefix(vip, "240.240.") {
		t.Fatalf("allocated VIP %q is not in 240.240.0.0/16", vip)
	}
	if out := client.MustRun("getent", "ahostsv4", "reviews.default.svc.cluster.local"); !strings.Contains(out, vip) {
		t.Fatalf("the DNS proxy does not resolve the service to %s: %q", vip, out)
	}
	if out := client.MustRun("getent", "ahostsv4", "reviews"); !strings.Contains(out, vip) {
		t.Fatalf("the short name does not resolve to %s: %q", vip, out)
	}

	url := "http://reviews.default.svc.cluster.local:9080/"
	counts := spread(t, client, url, 40)
	// Each backend's share of 40 fair coin flips is at least 8 but in about 1e-5 of runs.
	if counts["reviews from h2"] < 8 || counts["reviews from h3"] < 8 {
		t.Fatalf("40 requests were not spread over both backends: %v", counts)
	}
	t.Logf("40 requests: %v", counts)

	// h3's check fails: within the bound, every request goes to h2. A batch of
	// 10 misses a backend still in rotation once in 1024: the client's view
	// must also have taken the endpoint out before the check below.
	checks[1].Kill()
	start := time.Now()
	for {
		if c := spread(t, client, url, 10); c["reviews from h3"] == 0 && unhealthyEndpoints(agent) > 0 {
			break
		}
		if time.Since(start) > healthBound {
			t.Fatalf("requests still reach the unhealthy backend %s after its check failed", time.Since(start))
		}
	}
	t.Logf("unhealthy backend left rotation in %s (bound %s)", time.Since(start).Round(time.Millisecond), healthBound)
	if c := spread(t, client, url, 20); c["reviews from h2"] != 20 {
		t.Fatalf("with h3 unhealthy: %v", c)
	}
	if out := client.MustRun(agentBin, "services"); !strings.Contains(out, "UNHEALTHY") || !strings.Contains(out, "1/2") {
		t.Errorf("services does not show the unhealthy endpoint:\n%s", out)
	}

	// It passes again: it comes back.
	b2.Start("health-again", "nc", "-lk", "9081")
	start = time.Now()
	for spread(t, client, url, 10)["reviews from h3"] == 0 {
		if time.Since(start) > healthBound {
			t.Fatalf("the healthy backend did not come back within %s", healthBound)
		}
	}
	t.Logf("recovered backend back in rotation in %s", time.Since(start).Round(time.Millisecond))

	// DNS fails open: killed with SIGKILL, the agent cannot clean up, yet the
	// kernel drops its DNS table with its process; TCP capture stays (fail closed).
	if tables := client.MustRun("nft", "list", "tables"); !strings.Contains(tables, "ambient_agent_dns") {
		t.Fatalf("no DNS table while the agent runs:\n%s", tables)
	}
	if err := agent.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, ok := agent.Wait(5 * time.Second); !ok {
		t.Fatal("the agent did not die")
	}
	tables := client.MustRun("nft", "list", "tables")
	if strings.Contains(tables, "ambient_agent_dns") || !strings.Contains(tables, "inet ambient_agent\n") {
		t.Fatalf("after kill -9 the DNS table must be gone and the capture table kept:\n%s", tables)
	}
}

// unhealthyEndpoints counts the service endpoints the agent has out of rotation.
func unhealthyEndpoints(a *lab.Agent) int {
	m, err := readMesh(a)
	if err != nil {
		return 0
	}
	n := 0
	for _, s := range m.Services {
		for _, e := range s.Endpoints {
			if !e.Healthy {
				n++
			}
		}
	}
	return n
}

// spread sends n requests and counts the bodies.
func spread(t *testing.T, h *lab.Host, url string, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		out, err := curl(h, url)
		if err != nil {
			t.Fatalf("curl %s: %v", url, err)
		}
		counts[strings.TrimSpace(out)]++
	}
	return counts
}
