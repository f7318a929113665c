package packaging

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestDebInstallInBootedSystemd installs the .deb the way users do, with apt-get from a repository, and
// takes it through the service's life, an upgrade, removal and purge.
func TestDebInstallInBootedSystemd(t *testing.T) {
	require(t, true, "systemd-nspawn", "nsenter", "debootstrap", "dpkg-scanpackages", "tar")
	t.Parallel()
	a := built(t)
	root := bootableRoot(t)

	// A file-based apt repository, as `make apt-repo` makes; bound read-only into the machine as /repo,
	// where the root's only apt source points.
	repo := filepath.Join(t.TempDir(), "repo")
	addToRepo(t, repo, a.path(t, "deb", runtime.GOARCH))
	m := boot(t, root, machineOpts{readOnly: map[string]string{repo: "/repo"}})

	// Install: the unit is enabled, the user and directories exist, nothing is started yet.
	m.run("apt-get update -q && apt-get install -y -q ambient-agent")
	if v := m.run("dpkg-query -W -f='${Version}' ambient-agent"); v != firstVersion+"-"+release {
		t.Fatalf("installed version %q, want %s-%s", v, firstVersion, release)
	}
	if out := strings.TrimSpace(m.run("systemctl is-enabled ambient-agent")); out != "enabled" {
		t.Fatalf("after install the unit is %q, want enabled", out)
	}
	expectActive(m, "inactive")
	m.run("getent passwd ambient-agent")
	if owner := strings.TrimSpace(m.run("stat -c %U:%a /etc/ambient-agent/identity")); owner != "ambient-agent:750" {
		t.Fatalf("/etc/ambient-agent/identity is %s, want ambient-agent:750", owner)
	}
	checkUnit(m, "/lib/systemd/system/ambient-agent.service")
	// The shell completion is installed where bash-completion loads it from, and completes.
	if out := m.run(`bash -c 'source /usr/share/bash-completion/completions/ambient-agent; COMP_WORDS=(ambient-agent pro); COMP_CWORD=1; _ambient_agent; echo "${COMPREPLY[@]}"'`); strings.TrimSpace(out) != "probe" {
		t.Errorf("the installed bash completion completes \"ambient-agent pro\" to %q, want probe", out)
	}
	m.run("test -s /usr/share/zsh/vendor-completions/_ambient-agent && test -s /usr/share/fish/vendor_completions.d/ambient-agent.fish && test -s /usr/share/man/man8/ambient-agent.8.gz")
	if out := strings.TrimSpace(m.run("systemctl is-enabled ambient-agent-close.service")); out != "enabled" {
		t.Fatalf("after install ambient-agent-close.service is %q, want enabled (it closes the host from boot)", out)
	}
	if out := m.run("systemd-analyze verify /lib/systemd/system/ambient-agent-close.service 2>&1"); strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify ambient-agent-close.service is not clean:\n%s", out)
	}

	// With the example configuration (no [[workload]]) nothing captures: not the boot unit, not the agent.
	systemctlUnit(m, "start", "ambient-agent-close.service")
	expectTable(m, false)
	if out := m.run("journalctl -u ambient-agent-close.service --no-pager -o cat"); !strings.Contains(out, "nothing to close") {
		t.Fatalf("ambient-agent close with the example configuration:\n%s", out)
	}
	systemctl(m, "start")
	expectActive(m, "active")
	expectTable(m, false)
	flakes := cgroupFailures(m)
	m.run("systemctl stop ambient-agent")
	expectStopped(m, flakes)

	configure(m)
	serviceLifecycle(m)

	// Upgrade to a newer package: the edited config stays, the running agent hands over to the new binary
	// (a reload: the unit's main process stays, a new agent process takes over).
	sum := m.run("sha256sum /etc/ambient-agent/config.toml")
	pid, worker := mainPID(m), workerPID(m)
	addToRepo(t, repo, a.upgrade)
	m.run("apt-get update -q && apt-get install -y -q ambient-agent")
	if v := m.run("dpkg-query -W -f='${Version}' ambient-agent"); v != secondVersion+"-"+release {
		t.Fatalf("after the upgrade the version is %q, want %s-%s", v, secondVersion, release)
	}
	if after := m.run("sha256sum /etc/ambient-agent/config.toml"); after != sum {
		t.Fatalf("the upgrade changed the edited config:\n%s", m.run("cat /etc/ambient-agent/config.toml"))
	}
	expectActiveAgain(m)
	if after := mainPID(m); after != pid {
		t.Fatalf("the upgrade restarted the unit (MainPID %d -> %d); want a handoff", pid, after)
	}
	m.eventually(30*time.Second, "a new agent process serves", fmt.Sprintf(
		`w=$(cat /proc/%d/task/*/children | tr ' ' '\n' | sort -n | tail -n 1); [ -n "$w" ] && [ "$w" != %d ] && [ "$(readlink /proc/$w/exe)" = /usr/bin/ambient-agent ]`, pid, worker))
	if v := m.run("ambient-agent version"); !strings.Contains(v, secondVersion) {
		t.Fatalf("after the upgrade `ambient-agent version` says %q, want %s", strings.TrimSpace(v), secondVersion)
	}
	expectTable(m, true)
	expectNoLeak(m, true) // the upgrade's restart kept the host closed

	// Remove: the agent is stopped, its table gone, the binary gone; the configuration stays.
	flakes = cgroupFailures(m)
	m.run("apt-get remove -y -q ambient-agent")
	expectStopped(m, flakes)
	expectTable(m, false)
	expectNoAgentProcess(m)
	// The probe's counters count: with the host open, its packets pass, both ways.
	m.eventually(10*time.Second, "the leak probe sees the open host",
		`[ "$(nft list table inet aa_probe | grep -E 'comment "(plaintext|inbound_unauthorized)"' | grep -vc 'packets 0 ')" = 2 ]`)
	m.run("! test -e /usr/bin/ambient-agent && ! test -e /lib/systemd/system/ambient-agent.service")
	m.run("test -f /etc/ambient-agent/config.toml")

	// Purge: configuration, certificates, state and the unit's enablement are gone.
	m.run("apt-get purge -y -q ambient-agent")
	m.run("! test -e /etc/ambient-agent && ! test -e /var/lib/ambient-agent")
	m.run("! test -e /etc/systemd/system/multi-user.target.wants/ambient-agent.service")
	m.run("! test -e /etc/systemd/system/sysinit.target.wants/ambient-agent-close.service")
	if out, code := m.try("dpkg-query -W -f='${Status}' ambient-agent"); code == 0 && !strings.Contains(out, "not-installed") {
		t.Fatalf("after purge dpkg still knows ambient-agent: %s", out)
	}
}

// addToRepo adds a .deb to a flat apt repository with packaging/apt-repo.sh (what `make apt-repo` runs).
func addToRepo(t *testing.T, repo, deb string) {
	t.Helper()
	root := repoRoot(t)
	run(t, root, filepath.Join(root, "packaging", "apt-repo.sh"), repo, deb)
}
