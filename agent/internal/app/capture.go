package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
	"github.com/ambient-agent/ambient-agent/nft"
)

// captureTable is the capture table of a host that captures: its rules as
// installed, the watch that puts them back, and what happens to them at exit.
type captureTable struct {
	c    *capture.Capture
	mu   sync.Mutex // one writer of the table at a time: reload, repair or the cgroup watch
	spec nft.Spec   // the rules installed, under mu
	done bool       // exit has run: nothing is put back any more, under mu
	// paused: a new agent is taking over and installs its own rules; nothing is put back, under mu.
	paused bool
	zone   *nft.OwnedTable // the transparent connections' conntrack zone, from before the listeners serve; nil without
	keep   bool            // leave the table in place at exit (RunOptions.KeepCapture)
	// zoneMade is told of a zone table made after the start (retryZone).
	zoneMade func(*nft.OwnedTable)

	cfg     *atomic.Pointer[config.Config]
	log     *slog.Logger
	ready   *readiness
	metrics *telemetry.Metrics
	warn    *telemetry.Limiter
}

// repairBackoff spaces repairs of the table: another process that keeps
// changing it (a firewall manager that owns "everything") must not make the
// agent spin. The first repair after a quiet spell is immediate.
const repairBackoff = 20 * time.Millisecond

// removeStaleCapture deletes a capture table an earlier agent left when this one
// captures nothing: nobody would watch or repair it, and its rules are stale.
func removeStaleCapture(log *slog.Logger) {
	if st, err := nft.Inspect(0); err != nil || !st.Present {
		return
	}
	if err := capture.Cleanup(); err != nil {
		log.Error("a capture table an earlier agent left is in place and could not be removed; `ambient-agent cleanup` removes it", "err", err)
		return
	}
	log.Warn("removed the capture table an earlier agent left: this agent captures nothing", "table", "inet ambient_agent")
}

// install puts the rules in place; the listeners are bound already.
func (t *captureTable) install(ctx context.Context) error {
	if t.c == nil {
		return nil
	}
	if err := t.c.Install(ctx, t.spec); err != nil {
		return err
	}
	t.saveSpec(t.spec)
	if t.spec.ReturnMark != 0 {
		if err := capture.AgentReturnPath(t.spec.Mark).Install(); err != nil {
			return fmt.Errorf("%w (applications cannot be shown their real client; [capture] original_source = false does without)", err)
		}
	}
	t.ready.set(condCapture, true)
	t.log.Info("capture rules installed", "table", "inet ambient_agent", "workload_addresses", len(t.spec.Workloads),
		"original_source", t.spec.ReturnMark != 0)
	if err := t.c.LiveErr(); err != nil {
		t.log.Warn("no live copy of the capture table: a flush of the host's ruleset leaves captured traffic unredirected until the agent puts its table back (within a second)", "err", err)
	}
	return nil
}

// exit deals with the rules at exit, after the proxies drained: they
// stay with keepCapture (the host stays closed), else they go.
func (t *captureTable) exit() {
	if t.c == nil {
		return
	}
	// The agent's transparent connections are gone: their return path goes, whatever becomes of the table, and
	// keepReturnPath puts nothing back after that.
	t.mu.Lock()
	t.done = true
	err := capture.AgentReturnPath(t.spec.Mark).Remove()
	if t.zone != nil {
		// Its socket goes, not the table: an agent this one replaced, still draining, holds the same socket and
		// its connections need the zone; the kernel deletes the table with the last holder.
		err = errors.Join(err, t.zone.Release())
	}
	t.mu.Unlock()
	if err != nil {
		t.log.Error("removing the return path's rules failed; run `ambient-agent cleanup`", "err", err)
	}
	if t.keep {
		// The unit's ExecStopPost decides too, but systemd may fail to run it:
		// on a stop the agent opens the host itself.
		remove, reason := false, "not run by systemd"
		if unit := ownUnit(); unit != "" {
			remove, reason = AfterStop(context.Background(), unit)
		}
		if !remove {
			t.ready.set(condCapture, false)
			if err := t.c.Release(); err != nil {
				t.log.Warn("closing the live copy of the capture table", "err", err)
			}
			if t.c.Installed() != nil {
				t.log.Info("capture rules left in place: captured connections are refused until the agent runs again",
					"table", "inet ambient_agent", "why", reason)
			}
			return
		}
	}
	t.ready.set(condCapture, false)
	if err := t.c.Remove(); err != nil {
		t.log.Error("removing capture rules failed; run `ambient-agent cleanup`", "err", err)
		return
	}
	t.log.Info("capture rules removed")
}

// pause leaves the table to the agent that takes over from this one: nothing
// is put back, and the live copy goes (the new agent makes its own).
func (t *captureTable) pause() {
	if t.c == nil {
		return
	}
	t.mu.Lock()
	t.paused = true
	t.mu.Unlock()
	if err := t.c.Release(); err != nil {
		t.log.Warn("closing the live copy of the capture table for the agent that takes over", "err", err)
	}
}

// resume takes the table back from an agent that failed to take over: this
// agent's rules again, whatever that one installed, and the live copy.
func (t *captureTable) resume() {
	if t.c == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.paused = false
	t.c.KeepLiveCopy()
	if err := t.applyLocked(t.spec); err != nil {
		t.log.Error("capture rules not put back after a failed handoff; trying again on the next change", "err", err)
		return
	}
	t.log.Info("capture rules put back: the agent that was taking over went away")
}

// leave is the exit of an agent whose table, return path and zone another
// agent holds: they all stay, and this agent puts nothing back any more.
func (t *captureTable) leave() {
	if t.c == nil {
		return
	}
	t.mu.Lock()
	t.done = true
	zone := t.zone
	t.mu.Unlock()
	var err error
	if zone != nil {
		err = zone.Release()
	}
	if err = errors.Join(err, t.c.Release()); err != nil {
		t.log.Warn("closing this agent's sockets of the shared tables", "err", err)
	}
	t.log.Info("capture rules left to the agent that holds them", "table", "inet ambient_agent")
}

// watch puts the table back, within a second, whenever another process
// changes or removes it; the agent is not ready while it is missing.
func (t *captureTable) watch(ctx context.Context) error {
	if t.c == nil {
		return nil
	}
	if t.spec.ReturnMark != 0 { // original_source: a restart changes it, never a reload
		go every(ctx, time.Second, t.keepReturnPath)
	}
	changed := make(chan string, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case reason := <-changed:
				t.repair(ctx, reason)
				select {
				case <-ctx.Done():
					return
				case <-time.After(repairBackoff):
				}
			}
		}
	}()
	return t.c.Watch(ctx, func(reason string) {
		select {
		case changed <- reason:
		default: // a repair is pending: it will apply the whole table
		}
	})
}

func (t *captureTable) repair(ctx context.Context, reason string) {
	t.mu.Lock()
	idle := t.paused || t.done
	t.mu.Unlock()
	if idle {
		return // the table is the next agent's
	}
	start := time.Now()
	t.ready.set(condCapture, false)
	if ok, suppressed := t.warn.Allow("capture-changed"); ok {
		t.log.Warn("capture table changed by another process: not ready until it is back", "change", reason, "suppressed", suppressed)
	}
	for {
		t.mu.Lock()
		if t.paused || t.done {
			t.mu.Unlock()
			return // a new agent took the table meanwhile
		}
		err := t.c.Repair(ctx)
		t.mu.Unlock()
		if err == nil {
			break
		}
		t.log.Error("capture table not repaired; trying again in a second", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	t.metrics.CaptureRepairs.Inc()
	t.ready.set(condCapture, true)
	if ok, suppressed := t.warn.Allow("capture-repaired"); ok {
		t.log.Info("capture table repaired", "table", "inet ambient_agent", "took", time.Since(start).String(), "suppressed", suppressed)
	}
}

// keepReturnPath puts the return path's rules and routes back when another process removed them (`ip rule
// flush`, a network manager that removes the rules it did not make). Meanwhile the capture table drops the
// application's replies to clients rather than let them out of the host.
func (t *captureTable) keepReturnPath() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done || t.paused {
		return
	}
	if t.zone == nil {
		t.retryZone()
	}
	p := capture.AgentReturnPath(t.spec.Mark)
	ok, err := p.Installed()
	if err != nil {
		if ok, suppressed := t.warn.Allow("return-path-unreadable"); ok {
			t.log.Warn("the return path's rules could not be read", "err", err, "suppressed", suppressed)
		}
		return
	}
	if ok {
		return
	}
	if err := p.Install(); err != nil {
		t.log.Error("the return path's rules were removed by another process and could not be put back; applications' replies to clients are dropped", "err", err)
		return
	}
	t.metrics.CaptureRepairs.Inc()
	if ok, suppressed := t.warn.Allow("return-path-repaired"); ok {
		t.log.Warn("the return path's rules were removed by another process: put back", "table", p.Table, "suppressed", suppressed)
	}
}

// retryZone makes the zone table an earlier agent held when this one started
// (one it replaced, draining, or one that died: its table goes with its
// socket). t.mu is held.
func (t *captureTable) retryZone() {
	zone, err := capture.ReturnZone(capture.AgentReturnPath(t.spec.Mark).Mark)
	if err != nil {
		return
	}
	t.zone = zone
	if t.zoneMade != nil {
		t.zoneMade(zone)
	}
	t.log.Info("conntrack zone table in place for the connections made from clients' addresses", "table", "inet "+nft.ZoneTableName)
}

// reinstall replaces the capture rules with those of next (atomically;
// on error the old ones stay).
func (t *captureTable) reinstall(next *config.Config) error {
	if t.c == nil {
		return nil
	}
	spec := captureSpec(next, state.NewSnapshot(0, state.FromConfig(next)), t.outboundClasses(workloadClasses(next)))
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.paused {
		return errors.New("capture: a new agent is taking over from this one: its configuration applies")
	}
	if err := t.applyLocked(spec); err != nil {
		return err
	}
	t.log.Info("capture rules updated", "workload_addresses", len(spec.Workloads))
	return nil
}

// applyLocked installs spec (atomically: on error the old rules stay) and
// keeps it as the rules in place. t.mu is held.
func (t *captureTable) applyLocked(spec nft.Spec) error {
	if err := t.c.Install(context.Background(), spec); err != nil {
		return err
	}
	t.spec = spec
	t.saveSpec(spec)
	return nil
}

// outboundClasses are the capture rules of the recognised workloads. A unit
// whose cgroup does not exist yet (not running) is skipped with a warning:
// its processes follow the default until watchCgroups sees it start.
func (t *captureTable) outboundClasses(classes []workloadClass) []nft.OutboundClass {
	return resolveClasses(classes, func(c workloadClass, err error) {
		t.log.Warn("workload unit not running; its processes follow the default until it starts", "workload", c.uid, "unit", c.match.Unit, "err", err)
	})
}

// watchCgroups reinstalls the capture rules when a recognised unit's cgroup
// appears, goes, or is recreated.
func (t *captureTable) watchCgroups(ctx context.Context) error {
	if t.c == nil || !slices.ContainsFunc(workloadClasses(t.cfg.Load()), func(c workloadClass) bool { return c.match.Cgroup != "" }) {
		return nil
	}
	return every(ctx, cgroupWatchInterval, t.refreshClasses)
}

func (t *captureTable) refreshClasses() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.c.Installed() == nil || t.paused || t.done {
		return // not installed yet, removed at shutdown, or the next agent's
	}
	classes := resolveClasses(workloadClasses(t.cfg.Load()), func(workloadClass, error) {})
	if reflect.DeepEqual(classes, t.spec.OutboundClasses) {
		return
	}
	spec := t.spec
	spec.OutboundClasses = classes
	if err := t.applyLocked(spec); err != nil {
		t.log.Error("capture rules not updated for a unit's new cgroup", "err", err)
		return
	}
	t.log.Info("capture rules updated: a recognised unit started, stopped or restarted", "classes", len(classes))
}

// saveSpec writes spec where CloseHost finds it, when systemd gave the agent a
// state directory. Atomic: a crash leaves the old file or the new one.
func (t *captureTable) saveSpec(spec nft.Spec) {
	dir := os.Getenv("STATE_DIRECTORY")
	if dir == "" {
		return
	}
	b, err := json.Marshal(spec)
	if err == nil {
		tmp := filepath.Join(dir, ".capture-spec.json.tmp")
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, filepath.Join(dir, filepath.Base(SavedSpecFile)))
		}
	}
	if err != nil {
		t.log.Warn("could not save the capture spec for ambient-agent close", "err", err)
	}
}
