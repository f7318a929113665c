package app

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/handoff"
)

// Under systemd the unit's main process is a supervisor (`run -supervise`): it
// holds no socket and no connection, and runs the agent as a worker process.
// systemd ends the main process on a restart as on a stop, and with
// KillMode=process only that one, so a restart drops nothing: the workers go
// on, and the worker of the next start takes over from the running one
// (handoff.go). ExecStopPost (`ambient-agent cleanup -after-stop`) tells a stop
// from a restart and stops the workers on a stop. A reload when the binary on
// disk changed (a package upgrade) starts a worker of the new binary beside
// the running one, which takes over; any other reload goes to the worker.
//
// The workers' notifications reach systemd through the supervisor, which
// relays those of the worker that serves: READY once, STATUS, WATCHDOG.

// Supervise runs the agent as the supervisor of its workers. workerArgs are the
// arguments of `run` for a worker. It returns the exit code.
func Supervise(path string, workerArgs []string, stderr io.Writer) int {
	logCfg := config.Log{Level: slog.LevelInfo, Format: config.FormatText}
	admin := config.Admin{Socket: config.DefaultControlSocket}
	if cfg, err := config.Load(path); err == nil { // else the worker says what is wrong
		logCfg, admin = cfg.Log, cfg.Admin
	}
	log := newLogger(logCfg, stderr, new(slog.LevelVar)).With("component", "supervisor")
	exe, err := os.Executable()
	if err != nil {
		log.Error("the agent's own binary is unknown", "err", err)
		return 1
	}
	s := &supervisor{exe: exe, args: workerArgs, log: log, notify: newNotifier(log), handoffPath: admin.HandoffSocket(),
		events: make(chan workerEvent, 16), stderr: stderr}
	return s.run()
}

type supervisor struct {
	exe         string   // the agent's binary on disk: a new one after a package upgrade
	args        []string // a worker's `run` arguments
	log         *slog.Logger
	notify      notifier
	handoffPath string
	events      chan workerEvent
	stderr      io.Writer

	current *worker // serves: its notifications reach systemd
	pending *worker // started, not ready yet: it takes over from current, or from left
	left    int     // a worker the previous start left (a restart), which pending takes over from
	ready   bool    // systemd was told READY=1
}

// worker is an agent process the supervisor started.
type worker struct {
	cmd *exec.Cmd
	ino uint64 // of the binary it was started from
}

func (w *worker) pid() int { return w.cmd.Process.Pid }

// workerEvent is a worker's notification, or its exit.
type workerEvent struct {
	w      *worker
	msg    string
	exited bool
	code   int
}

func (s *supervisor) run() int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if pid, version, err := handoff.Probe(s.handoffPath); err != nil {
		s.log.Warn("the running agent could not be asked who it is; the new worker deals with it", "err", err)
	} else if pid != 0 {
		s.left = pid
		s.log.Info("an agent left by the previous start serves: the new worker takes over from it", "pid", pid, "version", version)
	}
	w, err := s.spawn()
	if err != nil {
		s.log.Error("the agent could not be started", "err", err)
		return 1
	}
	s.pending = w
	check := time.NewTicker(5 * time.Second)
	defer check.Stop()
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				s.reload()
				continue
			}
			// A stop or a restart: ExecStopPost knows which, and stops the workers on a stop.
			s.notify.send("STOPPING=1")
			s.log.Info("supervisor stopping: the agent goes on until ExecStopPost decides (a restart hands over, a stop stops it)")
			return 0
		case e := <-s.events:
			if code, done := s.handle(e); done {
				return code
			}
		case <-check.C:
			if code, done := s.checkLeft(); done {
				return code
			}
		}
	}
}

// spawn starts a worker of the binary on disk.
func (s *supervisor) spawn() (*worker, error) {
	r, wp, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer wp.Close()
	cmd := exec.Command(s.exe, append([]string{"run"}, s.args...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, s.stderr
	cmd.ExtraFiles = []*os.File{wp} // descriptor 3
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "WATCHDOG_PID=")
	}), notifyFDEnv+"=3")
	ino, _ := fileInode(s.exe)
	if err := cmd.Start(); err != nil {
		r.Close()
		return nil, fmt.Errorf("start %s: %w", s.exe, err)
	}
	w := &worker{cmd: cmd, ino: ino}
	s.log.Info("agent started", "pid", w.pid(), "exe", s.exe)
	go func() {
		defer r.Close()
		br := bufio.NewReader(r)
		for {
			msg, err := br.ReadString(0)
			if err != nil {
				return
			}
			s.events <- workerEvent{w: w, msg: strings.TrimSuffix(msg, "\x00")}
		}
	}()
	go func() {
		err := cmd.Wait()
		code := 0
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			code = 1
		}
		s.events <- workerEvent{w: w, exited: true, code: code}
	}()
	return w, nil
}

// handle deals with one event; done says the supervisor exits with code.
func (s *supervisor) handle(e workerEvent) (code int, done bool) {
	w := e.w
	if !e.exited {
		s.relay(w, e.msg)
		return 0, false
	}
	switch w {
	case s.pending:
		s.pending = nil
		s.log.Error("the new agent exited before it was ready (its log says why)", "pid", w.pid(), "code", e.code)
		if s.current != nil {
			// It may have died after the running one began to drain for it: then nobody serves.
			if !s.serving(s.current.pid()) {
				s.log.Error("the running agent no longer serves (it was draining for the new one): starting afresh", "pid", s.current.pid())
				return 1, true
			}
			s.notify.status(fmt.Sprintf("not upgraded: the new agent exited with %d before it was ready (see the journal); pid %d serves", e.code, s.current.pid()))
			return 0, false
		}
		if s.left != 0 && s.leftServes() {
			s.notify.ready(fmt.Sprintf("not replaced: the new agent exited with %d before it was ready (see the journal); the running agent (pid %d) serves", e.code, s.left))
			s.ready = true
			return 0, false
		}
		return max(e.code, 1), true
	case s.current:
		s.log.Error("the agent exited", "pid", w.pid(), "code", e.code)
		return max(e.code, 1), true
	default:
		s.log.Info("a replaced agent exited after its drain", "pid", w.pid(), "code", e.code)
		return 0, false
	}
}

// relay passes a worker's notification on: the serving worker's, or READY of
// the one taking over, which then serves.
func (s *supervisor) relay(w *worker, msg string) {
	var out []string
	for _, kv := range strings.Split(msg, "\n") {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "READY" && w == s.pending:
			s.promote(w)
			if s.ready {
				continue // systemd heard it once
			}
			s.ready = true
			out = append(out, kv)
		case w != s.current:
		case k == "STATUS" || k == "WATCHDOG" || k == "STOPPING":
			out = append(out, kv)
		}
	}
	if len(out) > 0 {
		s.notify.send(strings.Join(out, "\n"))
	}
}

// promote makes w the serving worker.
func (s *supervisor) promote(w *worker) {
	if prev := s.current; prev != nil {
		s.log.Info("the new agent serves; the one it replaced drains", "pid", w.pid(), "replaced", prev.pid())
	} else if s.left != 0 {
		s.log.Info("the new agent serves; the one the previous start left drains", "pid", w.pid(), "replaced", s.left)
	}
	s.current, s.pending, s.left = w, nil, 0
}

// reload hands over to a worker of a new binary, or passes the reload on.
func (s *supervisor) reload() {
	if s.pending != nil {
		s.log.Warn("reload ignored: a new agent is starting; reload again once it serves", "pid", s.pending.pid())
		return
	}
	if s.current != nil {
		if ino, err := fileInode(s.exe); err != nil || ino == s.current.ino {
			if err := s.current.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				s.log.Error("reload: signalling the agent", "err", err)
			}
			return
		}
		s.log.Info("reload: the agent's binary changed on disk: a new agent takes over from the running one", "exe", s.exe)
	}
	w, err := s.spawn()
	if err != nil {
		s.log.Error("reload: the new agent could not be started; the running one serves", "err", err)
		return
	}
	s.pending = w
}

// servingWait bounds how long the supervisor waits for an agent to answer on the handoff socket: one that has
// just taken over binds it a moment after it serves.
const servingWait = 2 * time.Second

// serving reports whether agent pid answers on the handoff socket as the agent that serves. Nobody answering is
// asked again for servingWait.
func (s *supervisor) serving(pid int) bool {
	for deadline := time.Now().Add(servingWait); ; time.Sleep(100 * time.Millisecond) {
		got, _, err := handoff.Probe(s.handoffPath)
		if err == nil && got != 0 {
			return got == pid
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// checkLeft keeps systemd's watchdog fed while the agent the previous start
// left serves because its replacement failed; once it is gone, the supervisor
// exits, and systemd starts afresh.
func (s *supervisor) checkLeft() (int, bool) {
	if s.current != nil || s.pending != nil || s.left == 0 {
		return 0, false
	}
	if !s.leftServes() {
		s.log.Error("the agent the previous start left no longer serves", "pid", s.left)
		return 1, true
	}
	s.notify.send("WATCHDOG=1")
	return 0, false
}

func (s *supervisor) leftServes() bool {
	pid, _, err := handoff.Probe(s.handoffPath)
	return err == nil && pid == s.left
}

func fileInode(path string) (uint64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, errors.New("no inode")
	}
	return st.Ino, nil
}
