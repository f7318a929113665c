package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
// before it gives up and leaves the running one serving.
const handoffReadyTimeout = 50 * time.Second

// dialHandoff asks a running agent of this configuration for its sockets.
func (a *App) dialHandoff(cfg *config.Config) error {
	a.gate, a.gossipGo = make(chan struct{}), make(chan struct{})
	tk, err := handoff.Dial(cfg.Admin.HandoffSocket(), Version)
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

// killAndWait kills pid and waits until it is gone.
func killAndWait(pid int, d time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("handoff: kill the stuck agent (pid %d): %w", pid, err)
	}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
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
	if err := a.waitReady(ctx, condGossip, condListeners); err != nil {
		return err
	}
	if a.gossip != nil {
		if err := tk.ReleaseGossip(); err != nil {
			return err
		}
		close(a.gossipGo)
		if err := a.waitReady(ctx, condListeners); err != nil {
			return err
		}
	}
	close(a.gate)
	if err := tk.Drain(); err != nil {
		return err
	}
	a.leaveShared.Store(false)
	for _, name := range a.sockets.Unclaimed() {
		a.log.Info("handoff: closed a socket of the old agent's that this configuration does not use", "socket", name)
	}
	a.log.Info("took over: this agent accepts every new connection; the old one drains what it holds",
		"old_pid", tk.PID, "old_version", tk.Version, "took", time.Since(start).Round(time.Millisecond).String())
	go func() {
		select {
		case <-tk.Done():
			a.log.Info("the old agent has exited", "old_pid", tk.PID)
		case <-ctx.Done():
		}
	}()
	return nil
}

// waitReady waits until no readiness condition but those allowed is missing.
func (a *App) waitReady(ctx context.Context, allowed ...string) error {
	ctx, cancel := context.WithTimeout(ctx, handoffReadyTimeout)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		_, missing := a.ready.state()
		if !slices.ContainsFunc(missing, func(c string) bool { return !slices.Contains(allowed, c) }) {
			return nil
		}
		select {
		case <-ctx.Done():
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
	admin.KeepSocketFile(a.ctlLn)
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
