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

// unsignedRelease is the last agent whose gossip records carry no proof
// (before issue 17): the one a mesh upgrades from.
const unsignedRelease = "12cdb9c"

// oldAgent builds the agent of unsignedRelease from this repository's
// history, as packaging/build.sh builds what ships.
var oldAgent = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp(scratch, "ambient-agent-old-")
	if err != nil {
		return "", err
	}
	archive := exec.Command("sh", "-c", fmt.Sprintf("git archive --format=tar %s | tar -x -C %s", unsignedRelease, dir))
	archive.Dir = lab.RepoRoot()
	if out, err := archive.CombinedOutput(); err != nil {
		return "", fmt.Errorf("the agent of %s is not in this clone's history (a full clone is needed): %w\n%s", unsignedRelease, err, out)
	}
	bin := filepath.Join(dir, "ambient-agent-old")
	build := exec.Command("go", "build", "-trimpath", "-buildmode=pie", "-ldflags=-s -w", "-o", bin, "./agent/cmd/ambient-agent")
	build.Dir, build.Env = dir, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the agent of %s: %w\n%s", unsignedRelease, err, out)
	}
	return bin, nil
})

// A mesh upgrades host by host from agents that sign nothing (docs/gossip.md,
// "Upgrading"): new agents with [gossip] accept_unsigned = true and old ones
// reach each other over HBONE in both directions at every step; once all are
// new, accept_unsigned goes, and nothing unsigned is used any more.
func TestRollingUpgradeFromUnsignedAgents(t *testing.T) {
	lab.Require(t, "nginx", "curl")
	old, err := oldAgent()
	if err != nil {
		t.Fatal(err)
	}
	l := lab.New(t, 4)
	key := gossipKey(t, l)
	agents := map[*lab.Host]*lab.Agent{}
	hosts := l.Hosts[:3] // the mesh that upgrades; the fourth joins at the end
	for _, h := range l.Hosts {
		h.StartNginx("hello from "+h.Name, 8080)
		h.Issue(agentBin, "default", "app-"+h.Name)
	}
	config := func(h *lab.Host, accept string) string {
		g := &lab.Gossip{KeyFile: key, Seed: l.Hosts[0]}
		if accept != "" { // a key the old agent does not know
			g.Keys = "accept_unsigned = " + accept
		}
		return lab.AgentConfig{Host: h, Gossip: g, Workloads: []lab.Workload{h.App("app-" + h.Name)}}.String()
	}
	start := func(h *lab.Host, bin, accept string) {
		if a := agents[h]; a != nil {
			a.Signal(15)
			if _, ok := a.Wait(10 * time.Second); !ok {
				t.Fatalf("the agent on %s did not stop", h.Name)
			}
		}
		var a *lab.Agent
		if bin == old {
			a = h.StartOldAgent(bin, config(h, accept))
		} else {
			a = h.StartAgent(bin, config(h, accept))
		}
		a.WaitReady(t, 20*time.Second)
		agents[h] = a
	}
	everyoneReachesEveryone := func(step string) {
		t.Helper()
		for _, h := range hosts {
			waitWorkloads(t, agents[h], 30*time.Second, func(ws []string) bool { return len(ws) == 3 }, step+": "+h.Name+" knows all")
		}
		for _, from := range hosts {
			for _, to := range hosts {
				if from == to {
					continue
				}
				before := countLines(agents[from].Log(), "direction=outbound", "route=hbone", "dst="+to.Addr.String()+":8080")
				mustCurl(t, from, fmt.Sprintf("http://%s:8080/", to.Addr), "hello from "+to.Name)
				waitCount(t, agents[from], before+1, 5*time.Second, "direction=outbound", "route=hbone", "dst="+to.Addr.String()+":8080")
			}
		}
	}

	h1, h2, h3, h4 := l.Hosts[0], l.Hosts[1], l.Hosts[2], l.Hosts[3]
	start(h1, old, "")
	start(h2, old, "")
	start(h3, agentBin, "true")
	everyoneReachesEveryone("h3 upgraded")
	start(h1, agentBin, "true")
	everyoneReachesEveryone("h1 and h3 upgraded")
	start(h2, agentBin, "true")
	everyoneReachesEveryone("all upgraded")
	for _, h := range hosts {
		start(h, agentBin, "false")
	}
	everyoneReachesEveryone("accept_unsigned off")
	for _, h := range hosts {
		if out := h.MustRun(agentBin, "doctor"); !strings.Contains(out, "[OK  ] gossip records: none rejected") {
			t.Errorf("%s rejected records of an upgraded mesh:\n%s", h.Name, out)
		}
	}

	// And an old agent that joins now is a member whose claims nobody uses.
	start(h4, old, "")
	agents[h1].WaitLog(t, "reason=unsigned", 30*time.Second)
	if ws := knownWorkloads(agents[h1]); len(ws) != 3 || contains(ws, "app-h4") {
		t.Errorf("h1 knows %v; the old agent's workload must not be among them", ws)
	}
}
