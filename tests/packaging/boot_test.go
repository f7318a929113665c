package packaging

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBootIsClosed reboots a machine with the agent installed and enabled: from the first ordinary service
// on, the host is closed (ambient-agent-close.service installed the table before sysinit.target), and a
// client that starts at boot never gets a byte out in plaintext, before or after the agent takes over.
func TestBootIsClosed(t *testing.T) {
	require(t, true, "systemd-nspawn", "nsenter", "debootstrap", "dpkg-scanpackages", "tar", "cp")
	t.Parallel()
	a := built(t)
	// A root of its own, not the shared read-only one with a throwaway overlay: it must outlive a reboot.
	root := filepath.Join(t.TempDir(), "root")
	if out, err := exec.Command("cp", "-a", bootableRoot(t), root).CombinedOutput(); err != nil {
		t.Fatalf("copy the root: %v\n%s", err, out)
	}
	repo := filepath.Join(t.TempDir(), "repo")
	addToRepo(t, repo, a.path(t, "deb", runtime.GOARCH))
	opts := machineOpts{name: "boot", persistent: true, readOnly: map[string]string{repo: "/repo"}}
	m := boot(t, root, opts)

	m.run("apt-get update -q && apt-get install -y -q ambient-agent")
	configure(m)
	// What the machine needs at every boot: the workload's address (configure made it by hand), and a client
	// that calls the off-host mesh destination from the start of the ordinary services.
	m.run(`set -e
cat >/etc/systemd/system/aa-net.service <<'EOF'
[Unit]
DefaultDependencies=no
Before=sysinit.target
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'ip link add aa0 type veth peer name aa1 || true; ip addr replace ` + workloadAddr + `/24 dev aa0; ip link set aa0 up; ip link set aa1 up'
[Install]
WantedBy=sysinit.target
EOF
cat >/root/probe.nft <<'EOF'
` + probeRuleset + `EOF
cat >/etc/systemd/system/aa-boot-probe.service <<'EOF'
[Unit]
Description=a client of the mesh that starts with the ordinary services
[Service]
ExecStart=/bin/bash -c 'nft -f /root/probe.nft; if nft list table inet ambient_agent >/dev/null 2>&1; then echo table present at start; else echo TABLE MISSING AT START; fi; for i in $(seq 400); do timeout 0.5 bash -c "exec 3<>/dev/tcp/` + probeAddr + `/9000" 2>/dev/null; sleep 0.05; done'
[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
systemctl enable aa-net.service aa-boot-probe.service`)
	systemctl(m, "enable --now")
	expectActive(m, "active")

	m = m.reboot(root, opts)
	expectActiveAgain(m)
	if out := m.run("journalctl -b -u ambient-agent-close.service --no-pager -o cat"); !strings.Contains(out, "host closed") {
		t.Fatalf("at boot ambient-agent-close did not close the host:\n%s", out)
	}
	out := m.eventually(30*time.Second, "the boot probe started", "journalctl -b -u aa-boot-probe.service --no-pager -o cat | grep -i 'at start'")
	if !strings.Contains(out, "table present at start") {
		t.Fatalf("the first ordinary service found the host open: %s", out)
	}
	closeDone := monotonic(m, "ambient-agent-close.service", "ExecMainExitTimestampMonotonic")
	probeStart := monotonic(m, "aa-boot-probe.service", "ExecMainStartTimestampMonotonic")
	agentReady := monotonic(m, "ambient-agent.service", "ActiveEnterTimestampMonotonic")
	t.Logf("boot: host closed at %.3f s, first client at %.3f s, agent ready at %.3f s", closeDone, probeStart, agentReady)
	if closeDone == 0 || probeStart <= closeDone {
		t.Fatalf("the host was closed at %.3f s, after the client started at %.3f s", closeDone, probeStart)
	}
	m.eventually(30*time.Second, "the probe called after the agent was ready", "[ $(nft list table inet aa_probe | grep -o 'packets [0-9]*' | head -1 | cut -d' ' -f2) -ge 40 ]")
	expectNoLeak(m, false)

	// A configuration broken before a reboot: the agent cannot start, and the host is closed all the same,
	// with the table the agent last installed.
	m.run(`sed -i 's/^\[node\]$/[node]\nbogus_key = 1/' /etc/ambient-agent/config.toml`)
	m = m.reboot(root, opts)
	out = m.run("journalctl -b -u ambient-agent-close.service --no-pager -o cat")
	if !strings.Contains(out, "host closed with the table the agent last installed") || !strings.Contains(out, "node.bogus_key") {
		t.Fatalf("at boot with a broken configuration ambient-agent close did not fall back on the saved table:\n%s", out)
	}
	out = m.eventually(30*time.Second, "the boot probe started", "journalctl -b -u aa-boot-probe.service --no-pager -o cat | grep -i 'at start'")
	if !strings.Contains(out, "table present at start") {
		t.Fatalf("with a broken configuration the first ordinary service found the host open: %s", out)
	}
	if state := strings.TrimSpace(m.run("systemctl is-active ambient-agent || true")); state == "active" {
		t.Fatalf("the agent runs with a broken configuration")
	}
	m.eventually(30*time.Second, "the probe called", "[ $(nft list table inet aa_probe | grep -o 'packets [0-9]*' | head -1 | cut -d' ' -f2) -ge 40 ]")
	expectTable(m, true)
	expectNoLeak(m, false)
}

// monotonic reads a unit's timestamp property in seconds since boot (0: never).
func monotonic(m *machine, unit, prop string) float64 {
	m.t.Helper()
	out := strings.TrimSpace(m.run("systemctl show -P " + prop + " " + unit))
	us, err := strconv.ParseFloat(out, 64)
	if err != nil {
		m.t.Fatalf("%s %s: %q", unit, prop, out)
	}
	return us / 1e6
}
