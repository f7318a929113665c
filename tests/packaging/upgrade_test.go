package packaging

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// upgradesDropNothing checks docs/operations.md's "Upgrades and restarts" on the two meshed machines of
// TestTwoHostMeshFromInstallGuide: vm-1's clients talk to vm-2's servers through the mesh (an iperf3 stream;
// loadgen's 50 idle connections, byte-exact stream, 20 new connections a second and one client connecting
// back to back) while the package is upgraded on vm-1 then on vm-2 (apt-get install of the next version),
// then each agent is restarted (systemctl restart). Nothing fails; the unit's main process stays through an
// upgrade; the old agents drain and exit once their connections end. An upgrade to a binary that fails at
// start, and a restart with a configuration that does not load, leave the running agent serving and the unit
// active, with the failure in the journal.
func upgradesDropNothing(t *testing.T, a *artifacts, repo string, vm1, vm2 *machine) {
	t.Helper()
	vm2.run(`systemd-run --quiet --unit=echo /tools/loadgen serve -listen 10.0.0.7:9000
systemd-run --quiet --unit=iperf-server iperf3 -s -B 10.0.0.7`)
	vm1.eventually(20*time.Second, "vm-2's echo server answers vm-1 through the mesh", "/tools/loadgen probe -target 10.0.0.7:9000")
	vm1.run(`systemd-run --quiet --unit=survive -p StandardOutput=file:/root/survive.txt /tools/loadgen survive -target 10.0.0.7:9000 -n 50 -rate 20
systemd-run --quiet --unit=iperf -p StandardOutput=file:/root/iperf.txt iperf3 -c 10.0.0.7 -t 3600 -i 0 --connect-timeout 5000`)
	vm1.eventually(20*time.Second, "loadgen holds its connections", "grep -q running /root/survive.txt")
	time.Sleep(2 * time.Second)
	phase := func() { vm1.run("systemctl kill -s USR1 survive") }

	addToRepo(t, repo, a.upgrade)
	for _, m := range []*machine{vm1, vm2} {
		phase()
		main, before := mainPID(m), agentProcesses(m)
		m.run("apt-get update -q && apt-get install -y -q ambient-agent")
		expectActive(m, "active")
		if after := mainPID(m); after != main {
			t.Fatalf("in %s: the upgrade restarted the unit (MainPID %d -> %d); want a handoff", m.name, main, after)
		}
		next := newAgent(m, before)
		if exe := strings.TrimSpace(m.run(fmt.Sprintf("readlink /proc/%d/exe", next))); exe != "/usr/bin/ambient-agent" {
			t.Fatalf("in %s: the new agent runs %q, want the upgraded /usr/bin/ambient-agent", m.name, exe)
		}
		old := slices.DeleteFunc(before, func(p int) bool { return p == main })
		for _, p := range old {
			if !slices.Contains(agentProcesses(m), p) {
				t.Fatalf("in %s: the replaced agent %d exited while it held connections", m.name, p)
			}
		}
		t.Logf("%s: while the replaced agent drains: memory %s (replaced), %s (new), %s (supervisor)", m.name,
			rssOf(m, old...), rssOf(m, next), rssOf(m, main))
		time.Sleep(2 * time.Second)
	}
	for _, m := range []*machine{vm1, vm2} {
		phase()
		main := mainPID(m)
		systemctl(m, "restart")
		expectActive(m, "active")
		if mainPID(m) == main {
			t.Fatalf("in %s: systemctl restart kept MainPID %d", m.name, main)
		}
		m.eventually(30*time.Second, "the new agent serves after the restart",
			"journalctl -u ambient-agent -o cat --no-pager | grep -F 'the new agent serves; the one the previous start left drains'")
		time.Sleep(2 * time.Second)
	}

	// vm-1: a binary that fails at start (it validates, as the shipped one, but does not run). The good one is
	// kept where the unit's sandbox can run it (ProtectHome hides /root).
	phase()
	serving := agentProcesses(vm1)
	vm1.run(`set -e
cp /usr/bin/ambient-agent /usr/local/bin/ambient-agent.good
printf '#!/bin/sh\ncase "$1" in validate) exec /usr/local/bin/ambient-agent.good "$@" ;; esac\necho "ambient-agent: this build is broken" >&2\nexit 3\n' >/usr/bin/ambient-agent.new
chmod 755 /usr/bin/ambient-agent.new
mv /usr/bin/ambient-agent.new /usr/bin/ambient-agent`)
	systemctl(vm1, "reload")
	vm1.eventually(20*time.Second, "the journal has the failed start", "journalctl -u ambient-agent -o cat --no-pager | grep -F 'the new agent exited before it was ready'")
	vm1.run("journalctl -u ambient-agent -o cat --no-pager | grep -F 'this build is broken'")
	expectActive(vm1, "active")
	if status := vm1.run("systemctl show -P StatusText ambient-agent"); !strings.Contains(status, "not upgraded") {
		t.Errorf("in vm-1: StatusText after a failed upgrade is %q, want it to say so", strings.TrimSpace(status))
	}
	if now := agentProcesses(vm1); !slices.Equal(now, serving) {
		t.Fatalf("in vm-1: a failed upgrade changed the agent's processes %v -> %v", serving, now)
	}
	vm1.run("cp /usr/local/bin/ambient-agent.good /usr/bin/ambient-agent.new && mv /usr/bin/ambient-agent.new /usr/bin/ambient-agent")

	// vm-2: a restart with a configuration that does not load.
	phase()
	vm2.run(`cp /etc/ambient-agent/config.toml /root/good.toml
sed -i 's/^\[node\]$/[node]\nbogus_key = 1/' /etc/ambient-agent/config.toml`)
	systemctl(vm2, "restart")
	expectActive(vm2, "active")
	vm2.eventually(20*time.Second, "the journal names the bad key", "journalctl -u ambient-agent -o cat --no-pager | grep -F 'node.bogus_key'")
	if status := vm2.run("systemctl show -P StatusText ambient-agent"); !strings.Contains(status, "not replaced") {
		t.Errorf("in vm-2: StatusText after a restart with a bad configuration is %q, want it to say so", strings.TrimSpace(status))
	}
	vm2.run("cp /root/good.toml /etc/ambient-agent/config.toml")
	systemctl(vm2, "restart")
	expectActive(vm2, "active")

	phase()
	time.Sleep(2 * time.Second)
	if out, _ := vm1.try("systemctl is-active iperf"); strings.TrimSpace(out) != "active" {
		t.Fatalf("the iperf3 stream ended during the upgrades:\n%s", vm1.run("cat /root/iperf.txt"))
	}
	vm1.run("systemctl kill -s INT iperf")
	vm1.run("systemctl kill -s TERM survive")
	vm1.eventually(30*time.Second, "loadgen reports", "grep -q '^idle:' /root/survive.txt")
	vm1.eventually(10*time.Second, "iperf3 reports", "grep -q receiver /root/iperf.txt")
	iperf := vm1.run("cat /root/iperf.txt")
	t.Logf("iperf3 across the upgrades and restarts:\n%s", iperf)
	if strings.Contains(iperf, "error") {
		t.Errorf("iperf3 saw an error across the upgrades and restarts")
	}
	report := vm1.run("cat /root/survive.txt")
	t.Logf("loadgen across the upgrades and restarts (phases: apt install vm-1, vm-2, restart vm-1, vm-2, broken binary vm-1, bad configuration vm-2, after):\n%s", report)
	if strings.Contains(report, "\nFAIL") || !strings.Contains(report, " made, 0 failed") {
		t.Errorf("connections failed across the upgrades and restarts")
	}
	// The replaced agents held only these connections: they exit.
	for _, m := range []*machine{vm1, vm2} {
		m.eventually(30*time.Second, "the replaced agents exit once their connections ended",
			`[ "$(grep -lx ambient-agent /proc/[0-9]*/comm | wc -l)" = 2 ]`)
	}
}

// agentProcesses are the machine's ambient-agent processes, in order.
func agentProcesses(m *machine) []int {
	m.t.Helper()
	out, _ := m.try("grep -lx ambient-agent /proc/[0-9]*/comm")
	var pids []int
	for _, f := range strings.Fields(out) {
		if parts := strings.Split(f, "/"); len(parts) > 2 {
			if p, err := strconv.Atoi(parts[2]); err == nil {
				pids = append(pids, p)
			}
		}
	}
	slices.Sort(pids)
	return pids
}

// newAgent waits for an agent process that is not one of before, and not the supervisor.
func newAgent(m *machine, before []int) int {
	m.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		main := mainPID(m)
		for _, p := range agentProcesses(m) {
			if !slices.Contains(before, p) && p != main {
				return p
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	m.t.Fatalf("in %s: no new agent process after the upgrade", m.name)
	return 0
}

// rssOf is the resident memory of pids, as /proc says.
func rssOf(m *machine, pids ...int) string {
	var out []string
	for _, p := range pids {
		v, _ := m.try(fmt.Sprintf("awk '/^VmRSS:/ {print $2 \" \" $3}' /proc/%d/status", p))
		out = append(out, strings.TrimSpace(v))
	}
	return strings.Join(out, ", ")
}
