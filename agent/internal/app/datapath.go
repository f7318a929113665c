package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"

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
	table     *captureTable // its Capture is nil when capture is disabled
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
	deps := a.dataPathDeps(cfg)
	workloads := make([]proxy.WorkloadPort, 0, len(deps.Recognised))
	for _, c := range workloadClasses(cfg) {
		workloads = append(workloads, proxy.WorkloadPort{UID: c.uid, Port: c.port})
	}
	l, err := proxy.Listen(proxy.ListenConfig{Mark: cfg.Capture.Mark, Limits: cfg.Limits, Workloads: workloads,
		IDs: a.ids, Log: a.log, Refused: a.refused, Sockets: a.sockets}, deps)
	if err != nil {
		return err
	}
	a.dp.deps, a.dp.listeners = deps, l
	a.dp.table = a.newCaptureTable(cfg)
	return nil
}

// newCaptureTable prepares the capture rules of cfg, installed once the
// listeners accept; with nothing to capture, it removes a table an earlier
// agent left.
func (a *App) newCaptureTable(cfg *config.Config) *captureTable {
	t := &captureTable{cfg: &a.cfg, log: a.log, ready: a.ready, metrics: a.metrics, warn: a.warn}
	if !captures(cfg) {
		a.log.Info("capture: off, or no [[workload]] on this host: nothing is captured")
		removeStaleCapture(a.log)
		return t
	}
	t.c = capture.New(capture.WithLiveCopy())
	t.spec = captureSpec(cfg, a.state.Load(), t.outboundClasses(workloadClasses(cfg)))
	a.ready.require(condCapture)
	if t.spec.ReturnMark != 0 {
		// Before any listener serves: a transparent connection made outside the zone would clash with itself once
		// the zone applies. The table touches only the agent's transparent sockets' packets.
		zone, err := a.returnZone(capture.AgentReturnPath(t.spec.Mark).Mark)
		if err != nil {
			a.log.Warn("no conntrack zone for the connections made from clients' addresses: now and then one may take the port of a client's own connection, which is then reset", "err", err)
		}
		t.zone = zone
		t.zoneMade = func(z *nft.OwnedTable) { a.sockets.HoldRaw(sockZone, z.Dup) }
		if zone != nil {
			t.zoneMade(zone)
		}
	}
	return t
}

// returnZone is the zone table of the agent's transparent connections: the
// running agent's, when this one takes over (its connections keep their zone
// while they drain), else a new one.
func (a *App) returnZone(mark uint32) (*nft.OwnedTable, error) {
	if f := a.sockets.Take(sockZone); f != nil {
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("the zone table of the running agent: %w", err)
		}
		return nft.AdoptOwned(nft.ZoneTableName, fd), nil
	}
	return capture.ReturnZone(mark)
}

// dataPathDeps are what the proxies share.
func (a *App) dataPathDeps(cfg *config.Config) *proxy.Deps {
	deps := &proxy.Deps{
		Snap:      a.state.Load,
		Dialer:    markedDialer(cfg.Capture),
		Resolve:   hostResolver(cfg),
		Metrics:   a.metrics,
		Access:    accessLog(cfg, a.log),
		Log:       a.log.With("component", "proxy"),
		Warn:      a.warn,
		Policy:    a.policies.Load,
		Routes:    a.routes.Load,
		Live:      a.live,
		HostAddrs: newHostAddrs(time.Now, 5*time.Second).get,
		Gateway:   gatewayRole(cfg),
		// Inbound per source and in total; outbound comes from this host's
		// processes only: in total.
		InboundLimit:  connlimit.New(cfg.Limits.Connections, cfg.Limits.ConnectionsPerSource),
		OutboundLimit: connlimit.New(cfg.Limits.Outbound, 0),
		Refused: func(listener string, remote netip.AddrPort, limit string) {
			a.refused(listener, remote, "connection", limit)
		},
	}
	if captures(cfg) && cfg.Capture.OriginalSource {
		deps.SourceMark, deps.SourceIPv6 = cfg.Capture.Mark|ports.ReturnMark, capture.IPv6Usable()
	}
	// Recognition changes need a restart (reload.go): the set is the one the
	// per-workload listeners are bound for.
	deps.Recognised = map[string]bool{}
	for _, c := range workloadClasses(cfg) {
		deps.Recognised[c.uid] = true
	}
	deps.Apply(dataPathSettings(cfg))
	return deps
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
	if cfg.Capture.OriginalSource {
		s.ReturnMark = ports.ReturnMark
	}
	s.UnmatchedBypass = cfg.Capture.Unmatched == config.UnmatchedPassthrough
	for _, w := range snap.Local() {
		s.Workloads = append(s.Workloads, w.Addresses...)
	}
	// A call between two workloads of this host is meshed when the caller is
	// recognised by its processes: with one workload there is no such call.
	// The configured classes count, not only those resolved now: a unit that
	// starts later gets its class without the rest of the spec being rebuilt.
	s.SameHost = len(workloadClasses(cfg)) > 0 && len(snap.Local()) > 1
	return s
}

// dataPathSettings are the proxies' settings that a reload changes.
func dataPathSettings(cfg *config.Config) proxy.Settings {
	s := proxy.Settings{}
	s.HairpinIdentity, s.Hairpin = hairpinIdentity(cfg)
	if cfg.Capture.DefaultWorkload != "" {
		s.DefaultWorkload = localUID(cfg, cfg.Capture.DefaultWorkload)
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
