package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
	"github.com/ambient-agent/ambient-agent/agent/internal/handoff"
	"github.com/ambient-agent/ambient-agent/nft"
)

// An agent that starts while another serves with the same configuration takes
// over from it (package handoff): it gets the running agent's listening
// sockets and the netlink sockets that own its zone and DNS tables, starts
// everything else (certificates, policies, istiod) without accepting, adopts
// the capture table, asks the running agent to release the gossip port, joins
// the pool in its place, and once ready accepts and tells it to drain. The old
// agent relays what it holds until it ends or [node] handoff_drain_timeout,
// with its certificates and policies, then exits leaving every shared rule and
// table to the new one. No socket is ever closed, so no connection is refused.

// handoffState is what a running agent tells the one that takes over from it.
type handoffState struct {
	Mark uint32       `json:"mark"`
	DNS  *nft.DNSSpec `json:"dns,omitempty"` // the DNS table its socket owns, if any
}

// Names of the sockets that own tables, as handed over.
const (
	sockZone = "netlink " + nft.ZoneTableName
	sockDNS  = "netlink " + nft.DNSTableName
)

// handoffReadyTimeout bounds how long a taking-over agent waits to be ready
// before it gives up and leaves the running one serving: within the unit's
// TimeoutStartSec (90 s) with the 10 s a stuck agent is given to answer, and
// below the 2 minutes the running agent waits (handoff's adoptTimeout).
const handoffReadyTimeout = 60 * time.Second

// dialHandoff asks a running agent of this configuration for its sockets.
func (a *App) dialHandoff(cfg *config.Config) error {
	a.gate, a.gossipGo = make(chan struct{}), make(chan struct{})
	warnSharedDir(cfg.Admin.Socket, a.log)
	tk, err := dialPatiently(cfg.Admin.HandoffSocket(), a.log)
	var stuck *handoff.StuckError
	if errors.As(err, &stuck) {
		// Stopped or deadlocked: what a watchdog would kill. Its connections are lost; the host stays closed
		// meanwhile (the capture table stays), and this agent starts afresh.
		a.log.Error("the running agent does not answer: killing it to start afresh", "pid", stuck.PID)
		err = killAndWait(stuck.PID, 5*time.Second)
	}
	if err != nil {
		return err
	}
	if tk == nil {
		a.sockets = handoff.NewSockets(nil)
		close(a.gate)
		close(a.gossipGo)
		return nil
	}
	var st handoffState
	if err := json.Unmarshal(tk.State, &st); err != nil {
		tk.Abort()
		return fmt.Errorf("handoff: the running agent's state: %w", err)
	}
	if captures(cfg) && st.Mark != cfg.Capture.Mark {
		tk.Abort()
		return fmt.Errorf("handoff: capture.mark changes from %#x to %#x: the running agent's connections carry the old mark; stop it first (systemctl stop, then start)", st.Mark, cfg.Capture.Mark)
	}
	a.takeover, a.sockets, a.handedState = tk, tk.Sockets, st
	a.leaveShared.Store(true) // until the takeover completes, everything shared is the running agent's
	a.log.Info("taking over from the running agent: it serves until this one is ready", "old_pid", tk.PID, "old_version", tk.Version)
	return nil
}

// busyWait bounds how long an agent waits while another takes over from the
// running one (a restart during an upgrade): then it takes over from whichever
// serves.
const busyWait = 60 * time.Second

// dialPatiently is handoff.Dial, asking again while another agent is taking over.
func dialPatiently(path string, log *slog.Logger) (*handoff.Takeover, error) {
	deadline := time.Now().Add(busyWait)
	for said := false; ; said = true {
		tk, err := handoff.Dial(path, Version)
		var busy *handoff.BusyError
		if !errors.As(err, &busy) || time.Now().After(deadline) {
			return tk, err
		}
		if !said {
			log.Info("another agent is taking over from the running one: waiting to take over from whichever serves", "pid", busy.PID)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// warnSharedDir warns when the control socket's directory is writable by other
// users: there, another user can keep this agent from starting or from handing
// over (a file in the way), though never take its sockets.
func warnSharedDir(socket string, log *slog.Logger) {
	fi, err := os.Stat(filepath.Dir(socket))
	if err == nil && fi.Mode().Perm()&0o002 != 0 {
		log.Warn("the control socket's directory is writable by every user: put admin.socket in a directory of the agent's own (the default /run/ambient-agent)", "dir", filepath.Dir(socket))
	}
}

// killAndWait kills pid and waits until it is gone.
func killAndWait(pid int, d time.Duration) error {
	if pid <= 1 {
		return fmt.Errorf("handoff: the running agent does not answer, and its pid (%d) is not one to kill: stop it by hand", pid)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("handoff: kill the stuck agent (pid %d): %w", pid, err)
	}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !processRunning(pid) {
			return nil
		}
	}
	return fmt.Errorf("handoff: the stuck agent (pid %d) is still there %s after SIGKILL", pid, d)
}

// takeOver completes a takeover once the rest of the agent runs: ready but
// for gossip, it has the old agent release the gossip port; ready, it accepts
// and has the old agent drain.
func (a *App) takeOver(ctx context.Context) error {
	tk := a.takeover
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, handoffReadyTimeout)
	defer cancel()
	err := a.waitReady(ctx, condGossip, condListeners)
	if err == nil && a.gossip != nil {
		if err = tk.ReleaseGossip(); err == nil {
			close(a.gossipGo)
			err = a.waitReady(ctx, condListeners)
		}
	}
	if err == nil {
		close(a.gate)
		err = tk.Drain()
	}
	switch {
	case errors.Is(err, errOldGone) || (err != nil && !processRunning(tk.PID)):
		// It died (a crash, kill -9) after handing over: this agent holds every socket, and serves alone.
		a.log.Warn("the running agent exited during the handoff: this agent serves alone", "old_pid", tk.PID)
		a.openAlone()
	case err != nil:
		return err
	default:
		a.log.Info("took over: this agent accepts every new connection; the old one drains what it holds",
			"old_pid", tk.PID, "old_version", tk.Version, "took", time.Since(start).Round(time.Millisecond).String())
		go func() {
			<-tk.Done()
			a.log.Info("the old agent has exited", "old_pid", tk.PID)
		}()
	}
	a.leaveShared.Store(false)
	admin.KeepSocketFile(a.ctlLn, false) // this agent's now
	for _, name := range a.sockets.Unclaimed() {
		a.log.Info("handoff: closed a socket of the old agent's that this configuration does not use", "socket", name)
	}
	return nil
}

// openAlone opens what a takeover keeps closed until the old agent lets go:
// the gossip port and the gate.
func (a *App) openAlone() {
	for _, ch := range []chan struct{}{a.gossipGo, a.gate} {
		select {
		case <-ch:
		default:
			close(ch)
		}
	}
}

// errOldGone: the agent being taken over from exited before the end.
var errOldGone = errors.New("handoff: the running agent exited")

// processRunning says whether pid runs (a zombie, exited but not yet reaped, does not).
func processRunning(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// waitReady waits until no readiness condition but those allowed is missing,
// or the old agent is gone.
func (a *App) waitReady(ctx context.Context, allowed ...string) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for n := 0; ; n++ {
		_, missing := a.ready.state()
		if !slices.ContainsFunc(missing, func(c string) bool { return !slices.Contains(allowed, c) }) {
			return nil
		}
		if n%20 == 0 && !processRunning(a.takeover.PID) {
			return errOldGone
		}
		select {
		case <-ctx.Done():
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("handoff: stopped before ready, waiting for %v: the running agent goes on serving", missing)
			}
			return fmt.Errorf("handoff: not ready within %s, waiting for %v: the running agent goes on serving", handoffReadyTimeout, missing)
		case <-t.C:
		}
	}
}

// waitGate waits until the servers may accept: at once on a fresh start, once
// ready when taking over. False: ctx ended first.
func (a *App) waitGate(ctx context.Context) bool {
	select {
	case <-a.gate:
		return true
	default:
	}
	select {
	case <-a.gate:
		return true
	case <-ctx.Done():
		return false
	}
}

// serveHandoff answers the agent that will replace this one.
func (a *App) serveHandoff(ctx context.Context) *handoff.Server {
	srv, err := handoff.Listen(a.cfg.Load().Admin.HandoffSocket(), a.sockets, handoffSource{a}, Version, a.log.With("component", "handoff"))
	if err != nil {
		a.log.Error("no handoff socket: a restart or an upgrade of this agent will refuse connections while it happens", "err", err)
		return nil
	}
	go func() {
		if err := srv.Serve(ctx); err != nil {
			a.log.Error("handoff socket", "err", err)
		}
	}()
	return srv
}

// handoffSource is the running agent as the handoff sees it.
type handoffSource struct{ a *App }

func (s handoffSource) State() json.RawMessage {
	st := handoffState{Mark: s.a.cfg.Load().Capture.Mark, DNS: s.a.dns.installedSpec()}
	b, _ := json.Marshal(st)
	return b
}

func (s handoffSource) Adopting() {
	s.a.leaveShared.Store(true)
	s.a.dp.table.pause()
}

func (s handoffSource) ReleaseGossip() error { return s.a.gossipCtl.release() }

func (s handoffSource) Drain() {
	a := s.a
	a.handedOff.Store(true)
	admin.KeepSocketFile(a.ctlLn, true)
	// The DNS table lives with the new agent's socket from now on: if that agent dies, DNS fails open, as it
	// would without a handoff, rather than being sent to a proxy nobody serves.
	a.dns.leave()
	a.notify.status("draining for the agent that replaced this one")
	a.stopServing()
	go func() {
		for a.carryMetrics(false) {
			time.Sleep(carryInterval)
		}
	}()
}

// carryInterval is how often a draining agent writes its counters for the
// agent that replaced it (and once more as it exits).
const carryInterval = 5 * time.Second

// carryMetrics writes this agent's counters for the agent that replaced it.
// The last write is final: later ones do nothing. It says whether to write again.
func (a *App) carryMetrics(final bool) bool {
	a.carryMu.Lock()
	defer a.carryMu.Unlock()
	if a.carryDone {
		return false
	}
	a.carryDone = final
	if err := a.carried.WriteOwn(); err != nil {
		a.log.Warn("the counters of this draining agent could not be written for the agent that replaced it", "err", err)
	}
	return !final
}

func (s handoffSource) Resume() {
	a := s.a
	a.leaveShared.Store(false)
	a.dp.table.resume()
	a.dns.resume()
	a.gossipCtl.resume()
}

// gossipControl lets a handoff stop gossip without leaving the pool, and start
// it again when the handoff fails.
type gossipControl struct {
	mu      sync.Mutex
	d       *discovery.Discovery
	cancel  context.CancelFunc // of the running Run, nil when none
	stopped chan struct{}      // closed when the running Run returns
	resumed chan struct{}      // closed by resume after a release
}

// running registers the Run that cancel ends and that closes stopped.
func (g *gossipControl) running(cancel context.CancelFunc, stopped chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cancel, g.stopped = cancel, stopped
}

// release stops the running gossip without leaving, and waits for it.
func (g *gossipControl) release() error {
	g.mu.Lock()
	cancel, stopped := g.cancel, g.stopped
	g.cancel = nil
	if g.resumed == nil {
		g.resumed = make(chan struct{})
	}
	g.mu.Unlock()
	if cancel == nil {
		return nil // gossip off, or released already
	}
	g.d.Handover()
	cancel()
	select {
	case <-stopped:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("gossip did not stop within 10s")
	}
}

// released is closed by resume after a release (nil: no release).
func (g *gossipControl) released() chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.resumed
}

func (g *gossipControl) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.resumed != nil {
		close(g.resumed)
		g.resumed = nil
	}
}
