package e2e

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// Two hosts, an agent each: both become ready; a SIGHUP with a broken config
// keeps the running one; SIGTERM exits 0 within the drain deadline; nothing of
// the test is left afterwards.
func TestLifecycleTwoHosts(t *testing.T) {
	l := lab.New(t, 2)
	var agents []*lab.Agent
	for _, h := range l.Hosts {
		h.Issue(agentBin, "default", "default")
		a := h.StartAgent(agentBin, lab.AgentConfig{Host: h, DrainTimeout: "3s", Workloads: []lab.Workload{h.App("")}, Tables: ""}.String())
		agents = append(agents, a)
	}
	for _, a := range agents {
		a.WaitReady(t, 10*time.Second)
	}

	// A broken reload keeps the old configuration and names the bad key.
	a := agents[0]
	broken := lab.AgentConfig{Host: a.Host, DrainTimeout: "3s", Workloads: []lab.Workload{a.Host.App("")}, Tables: "\n[gossip]\njion = [\"a\"]\n[log]\nlevel = \"debug\"\n"}.String()
	written := a.Host.WithSocket(broken)
	if err := os.WriteFile(a.ConfigPath, []byte(written), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	a.WaitLog(t, "gossip.jion: unknown key", 5*time.Second)
	line := 1 + strings.Count(written[:strings.Index(written, "jion")], "\n")
	if !strings.Contains(a.Log(), fmt.Sprintf("config.toml:%d: gossip.jion", line)) {
		t.Errorf("reload error does not name file and line:\n%s", a.Log())
	}
	if !a.Ready() {
		t.Fatalf("agent not ready after a rejected reload")
	}
	dump, err := a.Admin("/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dump, `"level": "INFO"`) || !strings.Contains(dump, `"name": "h1"`) {
		t.Errorf("config changed after a rejected reload:\n%s", dump)
	}

	// A good reload is applied.
	good := lab.AgentConfig{Host: a.Host, DrainTimeout: "3s", Workloads: []lab.Workload{a.Host.App("")}, Tables: "\n[log]\nlevel = \"debug\"\n"}.String()
	if err := os.WriteFile(a.ConfigPath, []byte(a.Host.WithSocket(good)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	a.WaitLog(t, "configuration reloaded", 5*time.Second)
	if dump, _ := a.Admin("/config_dump"); !strings.Contains(dump, `"level": "DEBUG"`) {
		t.Errorf("log level not reloaded:\n%s", dump)
	}

	// SIGTERM: exit 0 within the drain deadline (3s) plus slack.
	for _, a := range agents {
		start := time.Now()
		if err := a.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		code, exited := a.Wait(5 * time.Second)
		if !exited {
			t.Fatalf("agent on %s did not exit within 5s of SIGTERM", a.Host.Name)
		}
		if code != 0 {
			t.Errorf("agent on %s exited %d, want 0:\n%s", a.Host.Name, code, a.Log())
		}
		t.Logf("agent on %s stopped in %s", a.Host.Name, time.Since(start).Round(time.Millisecond))
	}

	// Nothing of the test is left: namespaces, links, processes.
	pids := []int{agents[0].Pid(), agents[1].Pid()}
	l.Close()
	if left := l.Namespaces(); len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
	if left := lab.RootLinksContaining(l.ID); len(left) > 0 {
		t.Errorf("links left behind: %v", left)
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("process %d still running", pid)
		}
	}
}
