package packaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// machine is a Debian booted with systemd as PID 1 in systemd-nspawn: its own network (so nftables is
// its own), a throwaway overlay over the shared root, and host directories bound into it.
// PID 1 here is not systemd and there is no system bus, so commands enter it with nsenter.
type machine struct {
	t       *testing.T
	name    string
	nspawn  *exec.Cmd
	exited  chan struct{} // closed when systemd-nspawn has exited
	pid1    int           // the container's systemd, as seen from the host
	bootLog string
}

// The environment of commands run in the machine: nothing leaks in from the test's environment.
var machineEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0",
}

// machineOpts says what a machine sees of the host.
type machineOpts struct {
	name     string            // distinguishes machines of one test (it leads the name, as it must in the bridge's interface names)
	readOnly map[string]string // host path -> path inside
	writable map[string]string // host path -> path inside
	bridge   string            // a host bridge to attach the machine's host0 to; default: no network at all
	// persistent boots root itself, writable, instead of a throwaway overlay over it: what the machine
	// changes outlives a reboot. root must then be the test's own.
	persistent bool
}

// boot starts a machine from root and waits until its systemd reports the system running. The machine
// is stopped when the test ends, whatever happens.
func boot(t *testing.T, root string, opts machineOpts) *machine {
	t.Helper()
	m := &machine{
		t:       t,
		name:    strings.ReplaceAll(fmt.Sprintf("aa-%s-%s-%d", opts.name, shortName(t.Name()), os.Getpid()), "--", "-"),
		exited:  make(chan struct{}),
		bootLog: filepath.Join(t.TempDir(), "boot.log"),
	}
	log, err := os.Create(m.bootLog)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	args := []string{"-D", root, "--boot", "--machine=" + m.name, "--register=no", "--keep-unit", "--console=passive"}
	if !opts.persistent {
		args = append(args, "--volatile=overlay")
	}
	if opts.bridge != "" {
		args = append(args, "--network-bridge="+opts.bridge)
	} else {
		args = append(args, "--private-network")
	}
	for host, inside := range opts.readOnly {
		args = append(args, "--bind-ro="+host+":"+inside)
	}
	for host, inside := range opts.writable {
		args = append(args, "--bind="+host+":"+inside)
	}
	m.nspawn = exec.Command("systemd-nspawn", args...)
	m.nspawn.Stdout, m.nspawn.Stderr = log, log
	m.nspawn.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := m.nspawn.Start(); err != nil {
		t.Fatalf("start systemd-nspawn: %v", err)
	}
	go func() {
		m.nspawn.Wait()
		close(m.exited)
	}()
	t.Cleanup(m.stop)

	deadline := time.Now().Add(30 * time.Second)
	for m.pid1 == 0 {
		if m.pid1 = childNamed(m.nspawn.Process.Pid, "systemd"); m.pid1 != 0 {
			break
		}
		select {
		case <-m.exited:
			t.Fatalf("systemd-nspawn exited while booting:\n%s", m.tail(40))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no systemd child of systemd-nspawn after 30s:\n%s", m.tail(40))
		}
	}
	// is-system-running --wait returns once boot is over: running, or degraded if a unit failed.
	var state string
	for {
		out, _, _ := m.exec(time.Minute, "systemctl is-system-running --wait")
		state = strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("machine did not finish booting (state %q):\n%s", state, m.tail(40))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if state == "degraded" {
		out, _, _ := m.exec(time.Minute, "systemctl --failed --no-legend")
		t.Logf("machine %s booted degraded (failed units: %s); going on", m.name, strings.TrimSpace(out))
	}
	return m
}

// shortName makes a test name usable in a machine name (a hostname label, at most 64 characters).
func shortName(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	s := strings.TrimPrefix(b.String(), "test")
	if len(s) > 32 {
		s = s[:32]
	}
	return s
}

// childNamed returns the pid of a child of parent whose command name is name, or 0.
func childNamed(parent int, name string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var comm string
		ppid := -1
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "Name:"); ok {
				comm = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "PPid:"); ok {
				ppid, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		if ppid == parent && comm == name {
			return pid
		}
	}
	return 0
}

// exec runs a shell script in the machine (all its namespaces, a clean environment) and returns its
// combined output and exit code; err is set only when it could not run or timed out.
func (m *machine) exec(timeout time.Duration, script string) (string, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := append([]string{"-t", strconv.Itoa(m.pid1), "-a", "--", "/usr/bin/env", "-i"}, machineEnv...)
	args = append(args, "/bin/sh", "-c", script)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return out.String(), -1, fmt.Errorf("timed out after %s", timeout)
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return out.String(), exit.ExitCode(), nil
	}
	if err != nil {
		return out.String(), -1, err
	}
	return out.String(), 0, nil
}

// run runs a script that must succeed and returns its output.
func (m *machine) run(script string) string {
	m.t.Helper()
	out, code, err := m.exec(3*time.Minute, script)
	if err != nil || code != 0 {
		m.t.Fatalf("in %s: %s\n-> exit %d %v\n%s", m.name, script, code, err, out)
	}
	return out
}

// try runs a script that may fail and returns its output and exit code.
func (m *machine) try(script string) (string, int) {
	m.t.Helper()
	out, code, err := m.exec(3*time.Minute, script)
	if err != nil {
		m.t.Fatalf("in %s: %s: %v\n%s", m.name, script, err, out)
	}
	return out, code
}

// eventually polls a script until it succeeds or the timeout passes, and returns its last output.
func (m *machine) eventually(timeout time.Duration, what, script string) string {
	m.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, code, err := m.exec(time.Minute, script)
		if err == nil && code == 0 {
			return out
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("in %s: %s: not true after %s (exit %d %v)\n%s", m.name, what, timeout, code, err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// reboot reboots the machine: its systemd shuts down and exits, and systemd-nspawn with it; then the
// machine boots again from root with opts, as a new machine. Only a persistent machine keeps what it had.
func (m *machine) reboot(root string, opts machineOpts) *machine {
	m.t.Helper()
	m.exec(30*time.Second, "systemctl reboot") // its answer may be cut short by the shutdown
	select {
	case <-m.exited:
	case <-time.After(90 * time.Second):
		m.t.Fatalf("machine %s did not go down for the reboot:\n%s", m.name, m.tail(40))
	}
	return boot(m.t, root, opts)
}

// stop dumps the machine's view of the agent if the test failed, then powers the machine off: SIGTERM
// to systemd-nspawn asks its systemd to shut down; if that hangs, SIGKILL to the container's PID 1 ends
// its whole PID namespace. The overlay and the bind mounts live in the machine's own mount namespace
// and go with it.
func (m *machine) stop() {
	if m.t.Failed() && m.pid1 != 0 {
		m.dump()
	}
	select {
	case <-m.exited:
		return
	default:
	}
	m.nspawn.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
		return
	case <-time.After(30 * time.Second):
	}
	m.t.Errorf("machine %s did not power off within 30s; killing it", m.name)
	if m.pid1 != 0 {
		syscall.Kill(m.pid1, syscall.SIGKILL)
	}
	m.nspawn.Process.Kill()
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		m.t.Errorf("systemd-nspawn (pid %d) still running after SIGKILL", m.nspawn.Process.Pid)
	}
}

// dump logs what helps to see why a test failed: the agent's journal, failed units, warnings.
func (m *machine) dump() {
	for _, script := range []string{
		"systemctl status --no-pager --full ambient-agent.service",
		"journalctl -b --no-pager -o short-precise -u ambient-agent.service | tail -n 80",
		"systemctl --failed --no-pager",
		"journalctl -b --no-pager -p warning | tail -n 40",
		"nft list ruleset",
	} {
		out, code, err := m.exec(30*time.Second, script)
		m.t.Logf("[%s] $ %s (exit %d %v)\n%s", m.name, script, code, err, out)
	}
	m.t.Logf("[%s] boot log (tail):\n%s", m.name, m.tail(30))
}

func (m *machine) tail(n int) string {
	b, _ := os.ReadFile(m.bootLog)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
