package app

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/meshca"
)

// A reload whose changes include a key that "takes effect only after a restart"
// must not leak that key into the running state. Here node.trust_domain (restart:
// certificates are issued for it) changes together with a remote workload's label
// (live, but it waits with the restart: sections refer to each other, and the
// running configuration must be one validated as a whole). The running config
// and the published snapshot keep the old trust domain and the old labels.
func TestReloadDoesNotHalfApplyRestartKeys(t *testing.T) {
	base := "[node]\nname = \"t\"\n[capture]\nenabled = false\n[dns]\nenabled = false\n" +
		"[[remote_workload]]\nname = \"r\"\nnode = \"peer\"\naddresses = [\"10.9.9.9\"]\n"
	cfg := testConfig(t, base)
	a, done, _, cancel := startApp(t, cfg)
	defer func() { cancel(); <-done }()

	next := strings.Replace(base, "name = \"t\"\n", "name = \"t\"\ntrust_domain = \"other.example\"\n", 1) +
		"labels = { app = \"x\" }\n"
	if err := os.WriteFile(cfg.Path, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	a.reload()

	if got := a.cfg.Load().Node.TrustDomain; got != cfg.Node.TrustDomain {
		t.Errorf("running config's trust domain is %q after a reload that needs a restart for it; want %q", got, cfg.Node.TrustDomain)
	}
	w, ok := a.state.Load().WorkloadByUID("peer/default/r")
	if !ok {
		t.Fatal("remote workload missing from the snapshot")
	}
	if w.TrustDomain != cfg.Node.TrustDomain {
		t.Errorf("published remote workload has trust domain %q (a restart-only change applied half-way); want %q",
			w.TrustDomain, cfg.Node.TrustDomain)
	}
	if w.Labels["app"] == "x" {
		t.Errorf("a change of a file that needs a restart was applied half-way: labels %v", w.Labels)
	}
}

// A new [policy] directory that does not compile rejects the whole reload: the
// other changes of the same file are not applied either.
func TestReloadRejectsBadNewPolicyDir(t *testing.T) {
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "p.yaml"), []byte("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nspec: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := "[node]\nname = \"t\"\n[capture]\nenabled = false\n[dns]\nenabled = false\n" +
		"[[remote_workload]]\nname = \"r\"\nnode = \"peer\"\naddresses = [\"10.9.9.9\"]\n"
	cfg := testConfig(t, base)
	a, done, logs, cancel := startApp(t, cfg)
	defer func() { cancel(); <-done }()

	next := base + "labels = { app = \"x\" }\n[policy]\ndir = \"" + bad + "\"\n"
	if err := os.WriteFile(cfg.Path, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	a.reload()

	if got := a.cfg.Load().Policy.Dir; got != cfg.Policy.Dir {
		t.Errorf("running policy dir is %q after a rejected reload; want %q", got, cfg.Policy.Dir)
	}
	if w, _ := a.state.Load().WorkloadByUID("peer/default/r"); w.Labels["app"] == "x" {
		t.Error("a change of a rejected reload was applied")
	}
	if !strings.Contains(logs.String(), "reload rejected") {
		t.Errorf("no rejection logged:\n%s", logs.String())
	}
}

// While a workload change waits for a restart (a new identity), a service
// change of the same reload waits with it: the service names the new workload.
func TestReloadServiceWaitsForWorkloadChange(t *testing.T) {
	ca, err := meshca.Init(filepath.Join(t.TempDir(), "ca"), spiffeid.RequireTrustDomainFromString("cluster.local"))
	if err != nil {
		t.Fatal(err)
	}
	ids := t.TempDir()
	svid, err := ca.Issue(spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/default"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteIdentity(ids, svid); err != nil {
		t.Fatal(err)
	}
	base := "[node]\nname = \"t\"\n[identity]\ndir = \"" + ids + "\"\n[capture]\nenabled = false\n[dns]\nenabled = false\n" +
		"[[workload]]\nname = \"a\"\naddresses = [\"10.9.9.1\"]\n"
	cfg := testConfig(t, base)
	a, done, logs, cancel := startApp(t, cfg)
	defer func() { cancel(); <-done }()

	next := base + "[[workload]]\nname = \"b\"\nservice_account = \"b\"\naddresses = [\"10.9.9.2\"]\n" +
		"[[service]]\nname = \"s\"\nworkloads = [\"b\"]\nports = [{ port = 80 }]\n"
	if err := os.WriteFile(cfg.Path, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	a.reload()

	running := a.cfg.Load()
	if len(running.Workloads) != 1 || len(running.Services) != 0 {
		t.Errorf("running config has %d workloads and %d services; want the 1 and 0 it had (the new identity needs a restart)",
			len(running.Workloads), len(running.Services))
	}
	if !strings.Contains(logs.String(), "service (waits with them)") {
		t.Errorf("the deferred service change was not reported:\n%s", logs.String())
	}
}

// A new socket mark needs a restart: every socket of the agent carries the mark
// it started with, and a capture table bypassing only the new one would send
// the agent's own connections back into it.
func TestReloadMarkNeedsRestart(t *testing.T) {
	prev := testConfig(t, "[node]\nname = \"t\"\n")
	next := *prev
	next.Capture.Mark = prev.Capture.Mark + 1
	live, restart := splitLive(prev, &next, config.Diff(prev, &next))
	if live["capture"] || !slices.Contains(restart, "capture.mark") {
		t.Errorf("mark change: live %v, restart %v; want capture.mark to need a restart", live, restart)
	}
	if eff := effective(prev, &next, live); eff.Capture.Mark != prev.Capture.Mark {
		t.Errorf("running mark %#x, want %#x until the restart", eff.Capture.Mark, prev.Capture.Mark)
	}
}
