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

# A mesh destination off this host, behind aa0: what the leak probe calls.
[[remote_workload]]
name = "db"
namespace = "default"
service_account = "db"
addresses = ["` + probeAddr + `"]
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
	worker := workerPID(m)
	m.run("kill -HUP " + strconv.Itoa(worker))
	m.eventually(10*time.Second, "the agent logs the refused reload",
		"journalctl --no-pager -o cat _PID="+strconv.Itoa(worker)+" | grep -F bogus_key")
	expectActive(m, "active")
	expectTable(m, true)
	m.run("cp /root/good.toml /etc/ambient-agent/config.toml")
	systemctl(m, "reload")
	expectActive(m, "active")

	// Stop (a stop job): the agent drains and ExecStopPost removes its table: the host opens.
	flakes := cgroupFailures(m)
	m.run("systemctl stop ambient-agent")
	expectStopped(m, flakes)
	expectTable(m, false)
	// ambient-agent-close.service (what runs at boot) closes it again without an agent.
	systemctlUnit(m, "start", "ambient-agent-close.service")
	expectTable(m, true)
	if out := m.run("journalctl -u ambient-agent-close.service --no-pager -o cat"); !strings.Contains(out, "host closed") {
		m.t.Fatalf("ambient-agent close did not say it closed the host:\n%s", out)
	}
	systemctl(m, "start")
	expectActive(m, "active")

	// From here on a client calls the off-host mesh destination 20 times a second, and nothing may leave
	// in plaintext whatever happens to the agent.
	startLeakProbe(m)

	// A crash of the agent: the table stays (the host is closed while no agent runs); its supervisor exits,
	// and systemd restarts the unit.
	pid = mainPID(m)
	m.run("kill -9 " + strconv.Itoa(workerPID(m)))
	expectTable(m, true)
	expectRestarted(m, pid)
	if n := m.run("systemctl show -P NRestarts ambient-agent"); strings.TrimSpace(n) == "0" {
		m.t.Fatalf("NRestarts is 0 after the agent was killed and came back")
	}
	expectTable(m, true)

	// A restart (a restart job): the table stays throughout.
	pid = mainPID(m)
	systemctl(m, "restart")
	expectActive(m, "active")
	if mainPID(m) == pid {
		m.t.Fatalf("systemctl restart kept MainPID %d", pid)
	}
	if out := m.run("journalctl -u ambient-agent --no-pager -o cat | grep -F 'ambient-agent cleanup:' | tail -n 1"); !strings.Contains(out, "stays closed") {
		m.t.Fatalf("after a restart ExecStopPost did not keep the table: %q", out)
	}

	// A watchdog timeout: a frozen agent is killed by systemd (SIGABRT) and restarted; the table stays.
	m.run(`mkdir -p /run/systemd/system/ambient-agent.service.d
printf '[Unit]\nStartLimitIntervalSec=0\n[Service]\nWatchdogSec=3s\nTimeoutAbortSec=5s\n' >/run/systemd/system/ambient-agent.service.d/watchdog.conf
systemctl daemon-reload`)
	systemctl(m, "restart")
	pid = mainPID(m)
	frozen := workerPID(m)
	m.run("kill -STOP " + strconv.Itoa(frozen))
	expectRestarted(m, pid)
	m.run("journalctl -u ambient-agent --no-pager -o cat | grep -F 'Watchdog timeout'")
	// The next start's agent finds the frozen one, which cannot hand over, and kills it.
	m.eventually(30*time.Second, "the frozen agent is gone", "! test -e /proc/"+strconv.Itoa(frozen))
	m.run("journalctl -u ambient-agent --no-pager -o cat | grep -F 'the running agent does not answer'")
	m.run("rm -r /run/systemd/system/ambient-agent.service.d && systemctl daemon-reload")
	systemctl(m, "restart")
	expectTable(m, true)
	expectNoLeak(m, true)
}

// probeAddr is a mesh workload off the machine ([[remote_workload]] db), reached through aa0.
const probeAddr = "10.99.0.20"

// startLeakProbe starts a client that connects to probeAddr:9000 twenty times a second, and counters
// in a table of its own: SYNs sent to it (hook output, before capture redirects them) and packets to it
// that leave on aa0 (postrouting): captured, a connection leaves as HBONE to port 15008 instead, so any
// packet counted there crossed the wire in plaintext. The ARP for probeAddr never resolves, which does
// not matter: postrouting counts a packet before the neighbour lookup.
func startLeakProbe(m *machine) {
	m.t.Helper()
	m.run(`set -e
nft -f - <<'EOF'
` + probeRuleset + `EOF
systemd-run --quiet --unit=aa-probe /bin/bash -c 'while :; do timeout 0.5 bash -c "exec 3<>/dev/tcp/` + probeAddr + `/9000" 2>/dev/null; sleep 0.05; done'
# Inbound: a host on aa1's side (a network namespace of its own) calls the workload's port 8080. Captured,
# the connection is redirected to the agent's 15006 before the input hook; a packet that reaches the input
# hook still for port 8080 would reach whatever listens there, unauthorized.
ip netns add peer
ip link set aa1 netns peer
ip -n peer addr add 10.99.0.30/24 dev aa1
ip -n peer link set lo up
ip -n peer link set aa1 up
systemd-run --quiet --unit=aa-inbound-probe ip netns exec peer /bin/bash -c 'while :; do timeout 0.5 bash -c "exec 3<>/dev/tcp/` + workloadAddr + `/8080" 2>/dev/null; sleep 0.05; done'`)
}

// probeRuleset is the leak probe's table of counters.
const probeRuleset = `table inet aa_probe {
	chain out {
		type filter hook output priority -200; policy accept;
		ip daddr ` + probeAddr + ` tcp dport 9000 tcp flags syn counter comment "attempts"
	}
	chain post {
		type filter hook postrouting priority 300; policy accept;
		oifname "aa0" ip daddr ` + probeAddr + ` tcp dport 9000 counter comment "plaintext"
	}
	chain pre {
		type filter hook prerouting priority -200; policy accept;
		iifname "aa0" ip daddr ` + workloadAddr + ` tcp dport 8080 tcp flags syn counter comment "inbound_attempts"
	}
	chain in {
		type filter hook input priority 0; policy accept;
		iifname "aa0" tcp dport 8080 counter comment "inbound_unauthorized"
	}
}
`

// expectNoLeak checks that the probe ran and that none of its packets left in plaintext, nor reached the
// application's port around capture. inbound: the inbound client runs too (startLeakProbe's, not the
// boot test's).
func expectNoLeak(m *machine, inbound bool) {
	m.t.Helper()
	out := m.run("nft list table inet aa_probe")
	counts := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] != "packets" {
				continue
			}
			n, _ := strconv.Atoi(f[i+1])
			for _, name := range []string{"attempts", "plaintext", "inbound_attempts", "inbound_unauthorized"} {
				if strings.Contains(line, `"`+name+`"`) {
					counts[name] = n
				}
			}
		}
	}
	m.t.Logf("leak probe: %d outbound connection attempts, %d packets in plaintext; %d inbound attempts, %d packets past capture",
		counts["attempts"], counts["plaintext"], counts["inbound_attempts"], counts["inbound_unauthorized"])
	if counts["attempts"] < 20 {
		m.t.Fatalf("the leak probe made %d attempts: it did not run\n%s", counts["attempts"], out)
	}
	if counts["plaintext"] != 0 {
		m.t.Fatalf("%d packets of captured connections left the host in plaintext\n%s", counts["plaintext"], out)
	}
	if inbound && counts["inbound_attempts"] < 20 {
		m.t.Fatalf("the inbound probe made %d attempts: it did not run\n%s", counts["inbound_attempts"], out)
	}
	if counts["inbound_unauthorized"] != 0 {
		m.t.Fatalf("%d inbound packets reached the application's port uncaptured\n%s", counts["inbound_unauthorized"], out)
	}
}

// expectRestarted waits until systemd has started a new agent in place of pid.
func expectRestarted(m *machine, pid int) {
	m.t.Helper()
	m.eventually(60*time.Second, "systemd restarts the agent", `
p=$(systemctl show -P MainPID ambient-agent)
[ "$p" != 0 ] && [ "$p" != `+strconv.Itoa(pid)+` ] && [ "$(systemctl is-active ambient-agent)" = active ]`)
}

// cgroupFlake is what systemd in these nspawn machines now and then does, with any unit, under load: it
// creates a unit's cgroup and then fails to move the new process into it (ENOENT), and the process exits
// 219/CGROUP before running anything. The tests retry what it breaks and log it; it is not the agent's.
const cgroupFlake = "systemd could not attach the process to the unit's cgroup (219/CGROUP, an nspawn quirk here)"

const maxAttempts = 4

// cgroupFailures counts ambient-agent's processes that exited 219/CGROUP so far.
func cgroupFailures(m *machine) int { return unitCgroupFailures(m, "ambient-agent") }

// unitCgroupFailures counts the unit's processes that exited 219/CGROUP so far.
func unitCgroupFailures(m *machine, unit string) int {
	m.t.Helper()
	out, _ := m.try("journalctl -u " + unit + " --no-pager -o cat | grep -c 'status=219/CGROUP'")
	n, _ := strconv.Atoi(strings.TrimSpace(out))
	return n
}

// systemctl runs `systemctl VERB ambient-agent`, which must succeed; a failure caused by cgroupFlake is
// retried (systemd is also restarting the unit by itself then, Restart=on-failure).
func systemctl(m *machine, verb string) { systemctlUnit(m, verb, "ambient-agent") }

// systemctlUnit runs `systemctl VERB UNIT`, which must succeed; a failure caused by cgroupFlake is retried.
func systemctlUnit(m *machine, verb, unit string) {
	m.t.Helper()
	for attempt := 1; ; attempt++ {
		flakes := unitCgroupFailures(m, unit)
		out, code := m.try("systemctl " + verb + " " + unit)
		if code == 0 {
			return
		}
		if unitCgroupFailures(m, unit) == flakes || attempt == maxAttempts {
			m.t.Fatalf("systemctl %s %s: exit %d\n%s", verb, unit, code, out)
		}
		m.t.Logf("systemctl %s %s: %s; again", verb, unit, cgroupFlake)
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

// workerPID is the agent process the unit's supervisor (its MainPID) started last.
func workerPID(m *machine) int {
	m.t.Helper()
	var pid int
	m.eventually(20*time.Second, "the supervisor has started the agent", `cat /proc/$(systemctl show -P MainPID ambient-agent)/task/*/children | grep -q .`)
	out := m.run(`cat /proc/$(systemctl show -P MainPID ambient-agent)/task/*/children`)
	for _, f := range strings.Fields(out) {
		if p, err := strconv.Atoi(f); err == nil && p > pid {
			pid = p
		}
	}
	return pid
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
