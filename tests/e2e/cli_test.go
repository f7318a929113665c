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
	a := h.StartAgent(agentBin, meshConfig(h).String())
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
	if strings.Contains(out, "FAIL") || !strings.Contains(out, "[OK  ] capture rules: table inet ambient_agent present") ||
		!strings.Contains(out, "[OK  ] return path: iif lo fwmark 0x2539 lookup 15006, IPv4 and IPv6") {
		t.Errorf("doctor on a healthy host:\n%s", out)
	}

	// A deleted table is put back by the agent (tests/e2e/closed_test.go); once it is,
	// status and doctor read it from the kernel again.
	h.MustRun("nft", "delete", "table", "inet", "ambient_agent")
	a.WaitLog(t, "capture table repaired", 5*time.Second)
	if out := h.MustRun(agentBin, "status"); !strings.Contains(out, "Capture:    on") {
		t.Errorf("status after the repair:\n%s", out)
	}
	if out := h.MustRun(agentBin, "doctor"); strings.Contains(out, "FAIL") {
		t.Errorf("doctor after the repair:\n%s", out)
	}
}
