package packaging

import (
	"strconv"
	"strings"
	"time"
)

// The workload the machines run: an address on a veth in the machine's own network namespace.
const workloadAddr = "10.99.0.10"

// meshConfig is what a user writes after installing: one workload, certificates from the built-in CA in
// the default [identity] dir.
const meshConfig = `[node]
name = "vm-1"
trust_domain = "cluster.local"

[[workload]]
name = "web"
namespace = "default"
service_account = "web"
addresses = ["` + workloadAddr + `"]
`

// configure gives the machine a workload address, a mesh CA, the workload's certificate and the config,
// as docs/install.md tells users to.
func configure(m *machine) {
	m.t.Helper()
	m.run(`set -e
ip link add aa0 type veth peer name aa1
ip addr add ` + workloadAddr + `/24 dev aa0
ip link set aa0 up
ip link set aa1 up
ambient-agent ca init -dir /root/mesh-ca -trust-domain cluster.local
ambient-agent ca issue -dir /root/mesh-ca -namespace default -service-account web -out /etc/ambient-agent/identity
chown -R ambient-agent:ambient-agent /etc/ambient-agent/identity
cat >/etc/ambient-agent/config.toml <<'EOF'
` + meshConfig + `EOF
ambient-agent validate -config /etc/ambient-agent/config.toml`)
}

// serviceLifecycle is the life of the service under systemd, the same whichever way it was installed:
// enable --now, a refused reload, stop, and a crash that systemd restarts. The agent is left running.
func serviceLifecycle(m *machine) {
	m.t.Helper()

	// Type=notify: the start job ends, and the unit is active, only once the agent sent READY=1.
	systemctl(m, "enable --now")
	expectActive(m, "active")
	if status := m.run("systemctl show -P StatusText ambient-agent"); !strings.HasPrefix(status, "ready") {
		m.t.Fatalf("after enable --now: StatusText %q, want the agent's ready status", strings.TrimSpace(status))
	}
	expectTable(m, true)
	if table := m.run("nft list table inet ambient_agent"); !strings.Contains(table, workloadAddr) {
		m.t.Fatalf("our table does not hold the workload address %s:\n%s", workloadAddr, table)
	}

	// A reload with a broken file is refused by ExecReload's validate; the agent keeps running.
	pid := mainPID(m)
	m.run(`cp /etc/ambient-agent/config.toml /root/good.toml
sed -i 's/^\[node\]$/[node]\nbogus_key = 1/' /etc/ambient-agent/config.toml`)
	for attempt := 1; ; attempt++ {
		flakes := cgroupFailures(m)
		out, code := m.try("systemctl reload ambient-agent")
		if code == 0 {
			m.t.Fatalf("systemctl reload with a broken config succeeded, want it refused:\n%s", out)
		}
		if cgroupFailures(m) == flakes || attempt == maxAttempts {
			break
		}
		m.t.Logf("systemctl reload: validate was not started (%s); again", cgroupFlake)
	}
	expectActive(m, "active")
	if after := mainPID(m); after != pid {
		m.t.Fatalf("the agent was restarted by a refused reload: MainPID %d -> %d", pid, after)
	}
	m.eventually(10*time.Second, "the journal names the bad key",
		"journalctl -u ambient-agent --no-pager -o cat | grep -F 'node.bogus_key'")
	// Signalled directly (no ExecReload validation), the agent itself keeps its running configuration.
	m.run("kill -HUP " + strconv.Itoa(pid))
	m.eventually(10*time.Second, "the agent logs the refused reload",
		"journalctl --no-pager -o cat _PID="+strconv.Itoa(pid)+" | grep -F bogus_key")
	expectActive(m, "active")
	expectTable(m, true)
	m.run("cp /root/good.toml /etc/ambient-agent/config.toml")
	systemctl(m, "reload")
	expectActive(m, "active")

	// Stop: the agent drains and removes its table.
	flakes := cgroupFailures(m)
	m.run("systemctl stop ambient-agent")
	expectStopped(m, flakes)
	expectTable(m, false)

	// A crash: systemd restarts the agent (Restart=on-failure); ExecStopPost cleaned up in between.
	systemctl(m, "start")
	expectActive(m, "active")
	pid = mainPID(m)
	m.run("kill -9 " + strconv.Itoa(pid))
	m.eventually(30*time.Second, "systemd restarts the killed agent", `
pid=$(systemctl show -P MainPID ambient-agent)
[ "$pid" != 0 ] && [ "$pid" != `+strconv.Itoa(pid)+` ] && [ "$(systemctl is-active ambient-agent)" = active ]`)
	if n := m.run("systemctl show -P NRestarts ambient-agent"); strings.TrimSpace(n) == "0" {
		m.t.Fatalf("NRestarts is 0 after the agent was killed and came back")
	}
	expectTable(m, true)
}

// cgroupFlake is what systemd in these nspawn machines now and then does, with any unit, under load: it
// creates a unit's cgroup and then fails to move the new process into it (ENOENT), and the process exits
// 219/CGROUP before running anything. The tests retry what it breaks and log it; it is not the agent's.
const cgroupFlake = "systemd could not attach the process to the unit's cgroup (219/CGROUP, an nspawn quirk here)"

const maxAttempts = 4

// cgroupFailures counts the unit's processes that exited 219/CGROUP so far.
func cgroupFailures(m *machine) int {
	m.t.Helper()
	out, _ := m.try("journalctl -u ambient-agent --no-pager -o cat | grep -c 'status=219/CGROUP'")
	n, _ := strconv.Atoi(strings.TrimSpace(out))
	return n
}

// systemctl runs `systemctl VERB ambient-agent`, which must succeed; a failure caused by cgroupFlake is
// retried (systemd is also restarting the unit by itself then, Restart=on-failure).
func systemctl(m *machine, verb string) {
	m.t.Helper()
	for attempt := 1; ; attempt++ {
		flakes := cgroupFailures(m)
		out, code := m.try("systemctl " + verb + " ambient-agent")
		if code == 0 {
			return
		}
		if cgroupFailures(m) == flakes || attempt == maxAttempts {
			m.t.Fatalf("systemctl %s ambient-agent: exit %d\n%s", verb, code, out)
		}
		m.t.Logf("systemctl %s ambient-agent: %s; again", verb, cgroupFlake)
		time.Sleep(500 * time.Millisecond)
	}
}

// expectStopped checks that the unit is stopped: inactive, or failed only because its ExecStopPost hit
// cgroupFlake since flakesBefore (the agent itself removes its table when it stops).
func expectStopped(m *machine, flakesBefore int) {
	m.t.Helper()
	out, _ := m.try("systemctl is-active ambient-agent")
	switch state := strings.TrimSpace(out); {
	case state == "inactive":
	case state == "failed" && cgroupFailures(m) > flakesBefore:
		m.t.Logf("ambient-agent stopped as failed: %s", cgroupFlake)
		m.try("systemctl reset-failed ambient-agent")
	default:
		m.t.Fatalf("ambient-agent is %q, want it stopped (inactive)", state)
	}
}

// expectActiveAgain waits for the unit to be active after a restart it did not ask for itself (a package
// upgrade, install.sh): a restart hit by cgroupFlake is redone by Restart=on-failure within seconds.
func expectActiveAgain(m *machine) {
	m.t.Helper()
	m.eventually(30*time.Second, "ambient-agent is active again", "[ \"$(systemctl is-active ambient-agent)\" = active ]")
}

func expectActive(m *machine, want string) {
	m.t.Helper()
	out, _ := m.try("systemctl is-active ambient-agent")
	if got := strings.TrimSpace(out); got != want {
		m.t.Fatalf("ambient-agent is %q, want %q", got, want)
	}
}

func expectTable(m *machine, present bool) {
	m.t.Helper()
	out, code := m.try("nft list table inet ambient_agent")
	switch {
	case present && code != 0:
		m.t.Fatalf("table inet ambient_agent is missing:\n%s", out)
	case !present && code == 0:
		m.t.Fatalf("table inet ambient_agent is still there:\n%s", out)
	}
}

// expectNoAgentProcess checks that no process of the machine runs ambient-agent.
func expectNoAgentProcess(m *machine) {
	m.t.Helper()
	if out, code := m.try("grep -lx ambient-agent /proc/[0-9]*/comm"); code == 0 {
		m.t.Fatalf("an ambient-agent process is still running: %s", strings.TrimSpace(out))
	}
}

func mainPID(m *machine) int {
	m.t.Helper()
	out := strings.TrimSpace(m.run("systemctl show -P MainPID ambient-agent"))
	pid, err := strconv.Atoi(out)
	if err != nil || pid == 0 {
		m.t.Fatalf("MainPID of ambient-agent is %q", out)
	}
	return pid
}

// checkUnit runs systemd-analyze verify on the installed unit (it must say nothing) and reports the
// security exposure, failing if the hardening regressed.
func checkUnit(m *machine, path string) {
	m.t.Helper()
	if out := m.run("systemd-analyze verify " + path + " 2>&1"); strings.TrimSpace(out) != "" {
		m.t.Fatalf("systemd-analyze verify %s is not clean:\n%s", path, out)
	}
	out := m.run("systemd-analyze security --no-pager ambient-agent.service")
	const marker = "Overall exposure level for ambient-agent.service:"
	i := strings.Index(out, marker)
	if i < 0 {
		m.t.Fatalf("no exposure level in systemd-analyze security:\n%s", out)
	}
	fields := strings.Fields(out[i+len(marker):])
	exposure, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		m.t.Fatalf("exposure %q: %v", fields[0], err)
	}
	m.t.Logf("systemd-analyze security ambient-agent.service: exposure %.1f %s", exposure, fields[1])
	if exposure > 2.0 {
		m.t.Fatalf("exposure %.1f is above 2.0: the unit's hardening regressed\n%s", exposure, out)
	}
}
