package app

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/connlimit"
	"github.com/ambient-agent/ambient-agent/agent/internal/proxy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/nft"
	"github.com/ambient-agent/ambient-agent/ports"
)

const condCapture = "capture"

// dataPath is the proxies and the capture rules that feed them.
type dataPath struct {
	deps      *proxy.Deps // what the proxies share; Apply swaps their reloadable settings
	listeners *proxy.Listeners
	capture   *capture.Capture // nil when capture is disabled
	specMu    sync.Mutex       // one writer of the table at a time: reload, or the cgroup watch
	spec      nft.Spec
	classes   []workloadClass // workloads recognised by their processes, with their own outbound listeners
}

// markedDialer is how the agent connects: its sockets carry the capture mark,
// so they are never redirected back into the agent.
func markedDialer(c config.Capture) *net.Dialer {
	return &net.Dialer{Timeout: proxy.ConnectTimeout, Control: capture.MarkControl(c.Mark)}
}

// hostResolver looks names up as the host does (/etc/hosts, then resolv.conf's
// servers, or [dns] upstreams when set), from marked sockets: never through
// the agent's DNS proxy, which would answer a mesh hostname with its VIP.
func hostResolver(cfg *config.Config) func(context.Context, string) ([]netip.Addr, error) {
	d := markedDialer(cfg.Capture)
	ups := cfg.DNS.Upstreams
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		if len(ups) > 0 {
			address = ups[0].String()
		}
		return d.DialContext(ctx, network, address)
	}}
	return func(ctx context.Context, host string) ([]netip.Addr, error) { return r.LookupNetIP(ctx, "ip", host) }
}

// bindDataPath binds the proxy listeners. Capture rules come later, in Run,
// once these accept, so no connection is ever redirected into nothing.
func (a *App) bindDataPath(cfg *config.Config) error {
	deps := &proxy.Deps{
		Snap:      a.state.Load,
		Dialer:    markedDialer(cfg.Capture),
		Resolve:   hostResolver(cfg),
		Metrics:   a.metrics,
		Access:    accessLog(cfg, a.log),
		Log:       a.log.With("component", "proxy"),
		Warn:      a.warn,
		Policy:    a.policies.Load,
		Live:      a.live,
		HostAddrs: newHostAddrs(time.Now, 5*time.Second).get,
		// Inbound per source and in total; outbound comes from this host's
		// processes only: in total.
		InboundLimit:  connlimit.New(cfg.Limits.Connections, cfg.Limits.ConnectionsPerSource),
		OutboundLimit: connlimit.New(cfg.Limits.Outbound, 0),
		Refused: func(listener string, remote netip.AddrPort, limit string) {
			a.refused(listener, remote, "connection", limit)
		},
	}
	// Recognition changes need a restart (reload.go): the set is the one the
	// per-workload listeners are bound for.
	recognised := map[string]bool{}
	var workloads []proxy.WorkloadPort
	for _, c := range workloadClasses(cfg) {
		recognised[c.uid] = true
		workloads = append(workloads, proxy.WorkloadPort{UID: c.uid, Port: c.port})
	}
	deps.Recognised = recognised
	deps.Apply(dataPathSettings(cfg))
	a.dp.deps = deps
	l, err := proxy.Listen(proxy.ListenConfig{Mark: cfg.Capture.Mark, Limits: cfg.Limits, Workloads: workloads,
		IDs: a.ids, Log: a.log, Refused: a.refused}, deps)
	if err != nil {
		return err
	}
	a.dp.listeners = l
	if captures(cfg) {
		a.dp.capture = capture.New(capture.WithLiveCopy())
		a.dp.spec = captureSpec(cfg, a.state.Load(), a.outboundClasses(workloadClasses(cfg)))
		a.ready.require(condCapture)
	} else {
		a.log.Info("capture: off, or no [[workload]] on this host: nothing is captured")
		a.removeStaleCapture()
	}
	return nil
}

// removeStaleCapture deletes a capture table an earlier agent left when this one
// captures nothing: nobody would watch or repair it, and its rules are stale.
func (a *App) removeStaleCapture() {
	if st, err := nft.Inspect(0); err != nil || !st.Present {
		return
	}
	if err := capture.Cleanup(); err != nil {
		a.log.Error("a capture table an earlier agent left is in place and could not be removed; `ambient-agent cleanup` removes it", "err", err)
		return
	}
	a.log.Warn("removed the capture table an earlier agent left: this agent captures nothing", "table", "inet ambient_agent")
}

// accessLog is the access logger: one line per connection, or nothing with
// [log] access = false (busy hosts, inside journald's rate limit).
func accessLog(cfg *config.Config, log *slog.Logger) *slog.Logger {
	if !cfg.Log.Access {
		return slog.New(slog.DiscardHandler)
	}
	return log.With("log", "access")
}

// captures says whether the agent installs a capture table for cfg: capture is
// on and the host runs at least one workload. A host with no workload (the
// example configuration of a fresh package) captures nothing: there is no
// identity to give its traffic.
func captures(cfg *config.Config) bool {
	return cfg.Capture.Enabled && len(cfg.Workloads) > 0
}

// captureSpec says what to capture: inbound to the local workloads' addresses,
// outbound of local processes (those of recognised workloads, classes, to
// their own ports), minus the configured exclusions.
func captureSpec(cfg *config.Config, snap *state.Snapshot, classes []nft.OutboundClass) nft.Spec {
	s := nft.Spec{
		Outbound:              true,
		Inbound:               true,
		Mark:                  cfg.Capture.Mark,
		OutboundPort:          ports.Outbound,
		InboundPort:           ports.InboundPlaintext,
		InboundExcludedPorts:  cfg.Capture.InboundExcludedPorts(),
		OutboundExcludedPorts: append(slices.Clone(cfg.Capture.ExcludeOutboundPorts), gossipPorts(cfg.Gossip)...),
		ExcludedCIDRs:         cfg.Capture.ExcludeCIDRs,
		InboundAllLocal:       cfg.Capture.InboundAddresses == config.InboundAll,
		InboundLeftOut:        cfg.Capture.UnmeshedAddresses,
		ExcludedUIDs:          cfg.Capture.ExcludeUIDs,
		ExcludedGIDs:          cfg.Capture.ExcludeGIDs,
		GuardListeners:        true,
	}
	if p := cfg.GossipPort(); p != 0 {
		s.InboundExcludedPorts = append(s.InboundExcludedPorts, p)
	}
	for _, c := range workloadClasses(cfg) {
		s.InboundExcludedPorts = append(s.InboundExcludedPorts, c.port)
	}
	s.OutboundClasses = classes
	s.UnmatchedBypass = cfg.Capture.Unmatched == config.UnmatchedPassthrough
	for _, w := range snap.Local() {
		s.Workloads = append(s.Workloads, w.Addresses...)
	}
	return s
}

// installCapture puts the rules in place; the listeners are bound already.
func (a *App) installCapture(ctx context.Context) error {
	if a.dp.capture == nil {
		return nil
	}
	if err := a.dp.capture.Install(ctx, a.dp.spec); err != nil {
		return err
	}
	a.saveSpec(a.dp.spec)
	a.ready.set(condCapture, true)
	a.log.Info("capture rules installed", "table", "inet ambient_agent", "workload_addresses", len(a.dp.spec.Workloads))
	if err := a.dp.capture.LiveErr(); err != nil {
		a.log.Warn("no live copy of the capture table: a flush of the host's ruleset leaves captured traffic unredirected until the agent puts its table back (within a second)", "err", err)
	}
	return nil
}

// exitCapture deals with the rules at exit, after the proxies drained: they
// stay with keepCapture (the host stays closed), else they go.
func (a *App) exitCapture() {
	if a.dp.capture == nil {
		return
	}
	if a.keepCapture {
		// The unit's ExecStopPost decides too, but systemd may fail to run it:
		// on a stop the agent opens the host itself.
		remove, reason := false, "not run by systemd"
		if unit := ownUnit(); unit != "" {
			remove, reason = AfterStop(context.Background(), unit)
		}
		if !remove {
			a.ready.set(condCapture, false)
			if err := a.dp.capture.Release(); err != nil {
				a.log.Warn("closing the live copy of the capture table", "err", err)
			}
			if a.dp.capture.Installed() != nil {
				a.log.Info("capture rules left in place: captured connections are refused until the agent runs again",
					"table", "inet ambient_agent", "why", reason)
			}
			return
		}
	}
	a.ready.set(condCapture, false)
	if err := a.dp.capture.Remove(); err != nil {
		a.log.Error("removing capture rules failed; run `ambient-agent cleanup`", "err", err)
		return
	}
	a.log.Info("capture rules removed")
}

// repairBackoff spaces repairs of the table: another process that keeps
// changing it (a firewall manager that owns "everything") must not make the
// agent spin. The first repair after a quiet spell is immediate.
const repairBackoff = 20 * time.Millisecond

// watchCapture puts the table back, within a second, whenever another process
// changes or removes it; the agent is not ready while it is missing.
func (a *App) watchCapture(ctx context.Context) error {
	if a.dp.capture == nil {
		return nil
	}
	changed := make(chan string, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case reason := <-changed:
				a.repairCapture(ctx, reason)
				select {
				case <-ctx.Done():
					return
				case <-time.After(repairBackoff):
				}
			}
		}
	}()
	return a.dp.capture.Watch(ctx, func(reason string) {
		select {
		case changed <- reason:
		default: // a repair is pending: it will apply the whole table
		}
	})
}

func (a *App) repairCapture(ctx context.Context, reason string) {
	start := time.Now()
	a.ready.set(condCapture, false)
	if ok, suppressed := a.warn.Allow("capture-changed"); ok {
		a.log.Warn("capture table changed by another process: not ready until it is back", "change", reason, "suppressed", suppressed)
	}
	for {
		a.dp.specMu.Lock()
		err := a.dp.capture.Repair(ctx)
		a.dp.specMu.Unlock()
		if err == nil {
			break
		}
		a.log.Error("capture table not repaired; trying again in a second", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	a.metrics.CaptureRepairs.Inc()
	a.ready.set(condCapture, true)
	if ok, suppressed := a.warn.Allow("capture-repaired"); ok {
		a.log.Info("capture table repaired", "table", "inet ambient_agent", "took", time.Since(start).String(), "suppressed", suppressed)
	}
}

// reinstallCapture replaces the capture rules with those of next (atomically;
// on error the old ones stay).
func (a *App) reinstallCapture(next *config.Config) error {
	if a.dp.capture == nil {
		return nil
	}
	spec := captureSpec(next, state.NewSnapshot(0, state.FromConfig(next)), a.outboundClasses(workloadClasses(next)))
	a.dp.specMu.Lock()
	defer a.dp.specMu.Unlock()
	if err := a.dp.capture.Install(context.Background(), spec); err != nil {
		return err
	}
	a.dp.spec = spec
	a.saveSpec(spec)
	a.log.Info("capture rules updated", "workload_addresses", len(spec.Workloads))
	return nil
}

// dataPathSettings are the proxies' settings that a reload changes.
func dataPathSettings(cfg *config.Config) proxy.Settings {
	s := proxy.Settings{}
	s.HairpinIdentity, s.Hairpin = hairpinIdentity(cfg)
	if cfg.Capture.DefaultWorkload != "" {
		s.DefaultWorkload = cfg.Node.Name + "/" + cfg.Capture.DefaultWorkload
	}
	return s
}

// refused counts a connection (or tunnel) a limit closed, and says so in the
// log at most once a second per listener and limit: a flood must not flood the
// journal too.
func (a *App) refused(listener string, remote netip.AddrPort, stage, limit string) {
	a.metrics.Refused.WithLabelValues(listener, stage, limit).Inc()
	key := "refused/" + listener + "/" + stage + "/" + limit
	if ok, suppressed := a.warn.Allow(key); ok {
		a.log.Warn("connection refused: over a limit ([limits])", "listener", listener, "stage", stage,
			"limit", limit, "remote", remote, "suppressed", suppressed)
	}
}
