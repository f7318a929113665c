package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/nft"
)

// A host is closed when the agent's table is in place and no agent serves it:
// captured connections, outbound and inbound, meet a port nobody listens on and
// are refused; none leaves in plaintext and none reaches an application
// unauthorized. DNS is not closed: the DNS redirect is owned by the agent's
// process and goes with it (docs/dns.md), so the host's resolver answers.

// SavedSpecFile is where an agent run by systemd keeps the capture spec it last
// installed (in its StateDirectory), for `ambient-agent close` to fall back on
// when the configuration does not load.
const SavedSpecFile = "/var/lib/ambient-agent/capture-spec.json"

// CloseHostSaved installs the spec an agent saved (SavedSpecFile) when there is
// no table: what `ambient-agent close` does when the configuration does not load,
// so that a broken file at boot does not leave the host open.
func CloseHostSaved(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("no saved capture spec: %w", err)
	}
	var spec nft.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return "", fmt.Errorf("saved capture spec %s: %w", path, err)
	}
	if done, present, err := tablePresent(); err != nil || present {
		return done, err
	}
	if err := capture.New().Install(context.Background(), spec); err != nil {
		return "", err
	}
	return fmt.Sprintf("host closed with the table the agent last installed (%s), for %d workload addresses", path, len(spec.Workloads)), nil
}

// tablePresent reports whether the table is in place, with what to say then.
func tablePresent() (string, bool, error) {
	st, err := nft.Inspect(0)
	if err != nil {
		return "", false, err
	}
	if st.Present {
		return "table inet ambient_agent is in place already: left as it is", true, nil
	}
	return "", false, nil
}

// CloseHost installs the capture table the configuration asks for when there is
// none, so the host is closed before any workload runs (at boot, before the agent
// starts: `ambient-agent close`). An existing table is left as it is: it is an
// agent's, which knows more (units' cgroups) than the configuration. It returns
// what it did, for the log.
func CloseHost(cfg *config.Config) (string, error) {
	if !captures(cfg) {
		return "nothing to close: capture is off or the host runs no [[workload]]", nil
	}
	if done, present, err := tablePresent(); err != nil || present {
		return done, err
	}
	// Units that do not run yet have no cgroup: their processes are captured
	// by the default rule meanwhile (or, with unmatched = "passthrough", not at
	// all until the agent runs and sees the unit start).
	classes := resolveClasses(workloadClasses(cfg), func(workloadClass, error) {})
	spec := captureSpec(cfg, state.NewSnapshot(0, state.FromConfig(cfg)), classes)
	if err := capture.New().Install(context.Background(), spec); err != nil {
		return "", err
	}
	return fmt.Sprintf("host closed: table inet ambient_agent installed for %d workload addresses; it opens when the agent runs", len(spec.Workloads)), nil
}

// Cleanup removes every piece of host state the agent may have left behind:
// its nftables table (other tables are never touched). This opens the host.
func Cleanup() error {
	return capture.Cleanup()
}

// AfterStop decides, in the unit's ExecStopPost and in the agent as it exits,
// whether the capture table goes: only when systemd is carrying out a stop of
// unit that an operator asked for (`systemctl stop`, `disable --now`, package
// removal), even if the agent then crashed or had to be killed. A crash, a kill
// or a watchdog timeout with no stop asked for (systemd restarts the agent), a
// restart, an upgrade's restart, an exit nobody asked for, and the system's
// shutdown (workloads may still run) keep the host closed. When systemd cannot
// be asked, the table stays: the error is in the reason.
func AfterStop(ctx context.Context, unit string) (remove bool, reason string) {
	jobs, err := systemdJobs(ctx)
	if err != nil {
		return false, fmt.Sprintf("cannot ask systemd whether %s is being stopped (%v): the host stays closed; `ambient-agent cleanup` opens it", unit, err)
	}
	return stopJob(jobs, unit)
}

// systemdJobs are systemd's queued jobs, asked over its private socket (root,
// no D-Bus daemon needed), else over the system bus.
func systemdJobs(ctx context.Context) ([]sddbus.JobStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := sddbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		conn, err = sddbus.NewSystemConnectionContext(ctx)
	}
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ListJobsContext(ctx)
}

// ownUnit is the systemd service this process runs in, from its cgroup v2
// path (0::/system.slice/ambient-agent.service), or "" outside one.
func ownUnit() string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok && os.Getenv("INVOCATION_ID") != "" {
			if unit := filepath.Base(path); strings.HasSuffix(unit, ".service") {
				return unit
			}
		}
	}
	return ""
}

// stopJob reads systemd's queued jobs for unit.
func stopJob(jobs []sddbus.JobStatus, unit string) (bool, string) {
	result := ""
	if r := os.Getenv("SERVICE_RESULT"); r != "" {
		result = " (result " + r + ")"
	}
	for _, j := range jobs {
		if j.JobType == "start" && shutdownTargets[j.Unit] {
			return false, "the system is going down (" + j.Unit + "): the host stays closed while workloads stop" + result
		}
	}
	for _, j := range jobs {
		if j.Unit != unit {
			continue
		}
		if j.JobType == "stop" {
			return true, unit + " is being stopped: the host opens" + result
		}
		return false, fmt.Sprintf("a %s job of %s follows: the host stays closed for the next agent%s", j.JobType, unit, result)
	}
	return false, "nobody stopped " + unit + " (it ended by itself; systemd starts it again): the host stays closed" + result
}

// StopsWorkers says, in the unit's ExecStopPost, whether the agent's processes
// must stop with the supervisor: on a stop an operator asked for and at the
// system's shutdown. After a restart, an upgrade or an exit of the supervisor
// nobody asked for they serve on, and the next supervisor's worker takes over.
// When systemd cannot be asked they serve on.
func StopsWorkers(ctx context.Context, unit string) bool {
	jobs, err := systemdJobs(ctx)
	if err != nil {
		return false
	}
	for _, j := range jobs {
		if (j.JobType == "start" && shutdownTargets[j.Unit]) || (j.Unit == unit && j.JobType == "stop") {
			return true
		}
	}
	return false
}

// StopWorkers ends every other process of this process's cgroup (the unit's
// agents, in ExecStopPost): SIGTERM, which drains within node.drain_timeout,
// then SIGKILL for those still there after within. It says what it did on out.
func StopWorkers(out io.Writer, unit string, within time.Duration) error {
	if own := ownUnitCgroup(); own != unit {
		return fmt.Errorf("not run in %s's cgroup (in %q): its processes are not ours to stop", unit, own)
	}
	procs, err := ownCgroupProcs()
	if err != nil {
		return err
	}
	others := func() []int {
		pids, _ := ownCgroupProcs()
		return slices.DeleteFunc(pids, func(p int) bool { return p == os.Getpid() })
	}
	pids := slices.DeleteFunc(procs, func(p int) bool { return p == os.Getpid() })
	if len(pids) == 0 {
		return nil
	}
	fmt.Fprintf(out, "ambient-agent cleanup: stopping the agent's processes %v\n", pids)
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	deadline := time.Now().Add(within)
	for len(others()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if left := others(); len(left) > 0 {
		fmt.Fprintf(out, "ambient-agent cleanup: killing %v, still there after %s\n", left, within)
		for _, p := range left {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		for end := time.Now().Add(5 * time.Second); len(others()) > 0 && time.Now().Before(end); {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// ownUnitCgroup is the last element of this process's cgroup v2 path.
func ownUnitCgroup() string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Base(p)
		}
	}
	return ""
}

// ownCgroupProcs are the processes in this process's cgroup, found through
// /proc (cgroupfs may not be where /proc/self/cgroup says, in a container).
func ownCgroupProcs() ([]int, error) {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cg, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup")); err == nil && bytes.Equal(cg, own) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// shutdownTargets are the targets a shutdown, a reboot or a kexec starts.
var shutdownTargets = map[string]bool{
	"shutdown.target": true, "reboot.target": true, "poweroff.target": true, "halt.target": true,
	"kexec.target": true, "soft-reboot.target": true,
}
