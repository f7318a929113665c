package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// status and doctor on a healthy host say so; with the capture table deleted
// by hand, doctor names the problem and the fix.
func TestStatusAndDoctor(t *testing.T) {
	lab.Require(t, "nft")
	l := lab.New(t, 1)
	h := l.Hosts[0]
	h.Issue(agentBin, "default", "default")
	a := h.StartAgent(agentBin, meshConfig(h))
	a.WaitReady(t, 15*time.Second)

	out := h.MustRun(agentBin, "status")
	for _, want := range []string{"Ready:      yes", "Capture:    on (inet ambient_agent)", "spiffe://cluster.local/ns/default/sa/default (expires in 29d)"} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not say %q:\n%s", want, out)
		}
	}
	if out := h.MustRun(agentBin, "status", "-json"); !strings.Contains(out, `"ready": true`) {
		t.Errorf("status -json:\n%s", out)
	}
	if out := h.MustRun(agentBin, "workloads"); !strings.Contains(out, "app-h1") || !strings.Contains(out, "local") {
		t.Errorf("workloads:\n%s", out)
	}
	out = h.MustRun(agentBin, "doctor")
	if strings.Contains(out, "FAIL") || !strings.Contains(out, "[OK  ] capture rules: table inet ambient_agent present") {
		t.Errorf("doctor on a healthy host:\n%s", out)
	}

	h.MustRun("nft", "delete", "table", "inet", "ambient_agent")
	out, err := h.Run(lab.Timeout(10*time.Second), agentBin, "doctor")
	if err == nil {
		t.Errorf("doctor exited 0 with the table deleted:\n%s", out)
	}
	if !strings.Contains(out, "[FAIL] capture rules: table inet ambient_agent is missing") ||
		!strings.Contains(out, "fix: restart the agent") {
		t.Errorf("doctor does not name the missing table and the fix:\n%s", out)
	}
}
