package lab

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Proc is a process started in a lab host.
type Proc struct {
	host    *Host
	Label   string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// Pid is the process id (the command itself: `ip netns exec` execs into it).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits up to d for the process to exit and returns its exit code, or -1
// and false if it is still running.
func (p *Proc) Wait(d time.Duration) (int, bool) {
	select {
	case <-p.done:
	case <-time.After(d):
		return -1, false
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0, true
	case errors.As(p.err, &ee):
		return ee.ExitCode(), true
	}
	return -1, true
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill stops the process: SIGTERM, then SIGKILL after a grace period.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	_ = p.Signal(syscall.SIGTERM)
	if _, ok := p.Wait(5 * time.Second); !ok {
		_ = p.Signal(syscall.SIGKILL)
		p.Wait(5 * time.Second)
	}
}

// Log returns what the process has written so far.
func (p *Proc) Log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return string(b)
}
