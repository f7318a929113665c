package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// knownWorkloads lists the names of the workloads an agent knows.
func knownWorkloads(a *lab.Agent) []string {
	body, err := a.Admin("/config_dump")
	if err != nil {
		return nil
	}
	var d struct {
		Workloads []struct{ Name string } `json:"workloads"`
	}
	if json.Unmarshal([]byte(body), &d) != nil {
		return nil
	}
	var names []string
	for _, w := range d.Workloads {
		names = append(names, w.Name)
	}
	return names
}

func waitWorkloads(t *testing.T, a *lab.Agent, d time.Duration, ok func([]string) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	var got []string
	for time.Now().Before(deadline) {
		if got = knownWorkloads(a); ok(got) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: agent on %s knows %v after %s", what, a.Host.Name, got, d)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Four hosts with only seeds configured form a mesh: captured curl from each
// to each works over HBONE; cutting one host's link removes it from the
// others; restoring the link brings it back.
func TestGossipMeshOfFourHosts(t *testing.T) {
	lab.Require(t, "nginx", "curl")
	l := lab.New(t, 4)
	keyFile := gossipKey(t, l)
	var agents []*lab.Agent
	for _, h := range l.Hosts {
		h.StartNginx("hello from "+h.Name, 8080)
		h.Issue(agentBin, "default", "default")
		agents = append(agents, h.StartAgent(agentBin, lab.AgentConfig{Host: h, Gossip: &lab.Gossip{KeyFile: keyFile, Seed: l.Hosts[0]}, Workloads: []lab.Workload{h.App("")}}.String()))
	}
	for _, a := range agents {
		a.WaitReady(t, 20*time.Second)
	}
	start := time.Now()
	for _, a := range agents {
		waitWorkloads(t, a, 20*time.Second, func(ws []string) bool { return len(ws) == 4 }, "convergence")
	}
	t.Logf("4 hosts converged in %s after readiness", time.Since(start).Round(time.Millisecond))

	for i, from := range l.Hosts {
		for j, to := range l.Hosts {
			if i == j {
				continue
			}
			out, err := curl(from, fmt.Sprintf("http://%s:8080/", to.Addr))
			if err != nil || !strings.Contains(out, "hello from "+to.Name) {
				t.Fatalf("%s -> %s: %v %q", from.Name, to.Name, err, out)
			}
		}
		// The access log is written when a connection closes, a moment after
		// curl has its answer.
		n := 0
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if n = countLines(agents[i].Log(), "direction=outbound", "route=hbone"); n >= 3 {
				break
			}
		}
		if n != 3 {
			t.Errorf("%s carried %d of its 3 connections over HBONE:\n%s", from.Name, n, agents[i].Log())
		}
	}

	// A peer can be suspect for a moment when a probe is late on a loaded
	// machine: ask again for a few seconds before failing.
	var peers, status string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		peers, status = l.Hosts[0].MustRun(agentBin, "peers"), l.Hosts[0].MustRun(agentBin, "status")
		if (strings.Count(peers, " alive ") == 3 && strings.Contains(peers, "self") &&
			strings.Contains(status, "Peers:      3 alive of 3 known")) || time.Now().After(deadline) {
			break
		}
	}
	if strings.Count(peers, " alive ") != 3 || !strings.Contains(peers, "self") {
		t.Errorf("peers on h1 does not show 3 alive peers and itself:\n%s", peers)
	}
	if !strings.Contains(status, "Peers:      3 alive of 3 known") {
		t.Errorf("status on h1 does not count the peers:\n%s", status)
	}

	if out := l.Hosts[1].MustRun(agentBin, "doctor"); !strings.Contains(out, "[OK  ] gossip peers: 3 alive") {
		t.Errorf("doctor on h2 does not see its peers:\n%s", out)
	}

	if n, ok := metricValue(t, scrape(t, l.Hosts[0]), "ambient_agent_gossip_events_total", map[string]string{"event": "records_changed"}); !ok || n < 1 {
		t.Errorf("h1 counted no gossip record changes")
	}

	// Cut h4 off the switch: the others drop its workload after the grace period.
	cut := l.Hosts[3]
	l.SetLink(cut, false)
	start = time.Now()
	for _, a := range agents[:3] {
		waitWorkloads(t, a, 40*time.Second, func(ws []string) bool { return !contains(ws, "app-h4") }, "after the cut")
	}
	t.Logf("h4 removed %s after its link was cut", time.Since(start).Round(time.Millisecond))
	if n, ok := metricValue(t, scrape(t, l.Hosts[0]), "ambient_agent_gossip_events_total", map[string]string{"event": "member_down"}); !ok || n < 1 {
		t.Errorf("h1 counted no member going down")
	}
	// h4's address is still the mesh's: h1 refuses to send to it rather than pass it through in plaintext (when
	// the link comes back before h4's record does, a passed-through connection would go out in clear).
	if out, err := curl(l.Hosts[0], fmt.Sprintf("http://%s:8080/", cut.Addr)); err == nil {
		t.Errorf("h1 -> h4 while h4 is cut off: %q", out)
	}
	agents[0].WaitLog(t, "node h4, which failed or is cut off", 5*time.Second)
	l.SetLink(cut, true)
	start = time.Now()
	for _, a := range agents[:3] {
		waitWorkloads(t, a, 90*time.Second, func(ws []string) bool { return contains(ws, "app-h4") }, "after the link came back")
	}
	t.Logf("h4 back %s after its link was restored", time.Since(start).Round(time.Millisecond))
	// h1's pooled HBONE connection to h4 outlived the cut: a keepalive PING
	// sent during it sits in TCP's retransmission backoff (seconds between
	// tries) until a retry gets through, or the 20 s keepalive timeout drops
	// the connection. A request meanwhile can time out: retry for a while.
	var out string
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		out, err = curl(l.Hosts[0], fmt.Sprintf("http://%s:8080/", cut.Addr))
		if (err == nil && strings.Contains(out, "hello from h4")) || time.Now().After(deadline) {
			break
		}
		t.Logf("h1 -> h4 after the link came back: %v %q; again", err, out)
	}
	if err != nil || !strings.Contains(out, "hello from h4") {
		t.Fatalf("h1 -> h4 after the link came back: %v %q", err, out)
	}
}

// countLines counts the lines of log that contain every one of subs.
func countLines(log string, subs ...string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}
