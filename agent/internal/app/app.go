package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
	"github.com/ambient-agent/ambient-agent/agent/internal/health"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/proxy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
	"github.com/ambient-agent/ambient-agent/agent/internal/xds"
)

// App is the running agent: its configuration, its components and their state.
type App struct {
	path    string
	cfg     atomic.Pointer[config.Config]
	log     *slog.Logger
	level   *slog.LevelVar
	ready   *readiness
	notify  notifier
	started time.Time
	quit    chan struct{} // closed by /quitquitquit
	// keepCapture leaves the capture table in place at exit (RunOptions).
	keepCapture bool

	ids       identity.Source // nil when the host runs no workload
	state     *state.Store
	dp        dataPath
	dns       dnsProxy
	policies  *policy.Store // the policy directory's and istiod's, merged
	publishMu sync.Mutex    // one state snapshot built at a time
	live      *proxy.Live
	gossip    *discovery.Discovery // nil when gossip is off
	istiod    *xds.Client          // nil without [istio] discovery
	health    *health.Checker
	// gossipAlive is the alive member count last seen, for member events.
	gossipAlive atomic.Int64
	// gossipMet is when this agent first saw another member (Unix nanoseconds; 0: not yet).
	gossipMet atomic.Int64
	adminSrv  *admin.Server
	ctlSrv    *admin.Server // the control API, on the unix socket
	readySrv  *admin.Server
	metrSrv   *admin.Server
	warn      *telemetry.Limiter // rate-limits warnings: one per key per second
	registry  *prometheus.Registry
	metrics   *telemetry.Metrics
}

// Condition names reported by readiness.
const condListeners = "listeners"

// New builds the agent from a validated config and binds its listeners. Nothing
// runs until Run.
func New(cfg *config.Config, log *slog.Logger, level *slog.LevelVar) (*App, error) {
	a := &App{
		path:    cfg.Path,
		log:     log,
		level:   level,
		ready:   newReadiness(),
		notify:  notifier{log: log},
		started: time.Now(),
		quit:    make(chan struct{}),
	}
	a.cfg.Store(cfg)
	a.registry = prometheus.NewRegistry()
	a.metrics = telemetry.NewMetrics(a.registry, Version)
	a.warn = telemetry.NewLimiter(time.Second)
	if err := a.newHealth(cfg); err != nil {
		return nil, fmt.Errorf("health checks: %w", err)
	}
	a.state = state.NewStore(a.localInput(cfg))
	ids, err := newIdentitySource(cfg, log)
	if err != nil {
		return nil, err
	}
	if ids != nil {
		a.ids = ids
		a.ready.require(condCertificates)
	}
	gossip, err := newDiscovery(cfg, a)
	if err != nil {
		return nil, err
	}
	if gossip != nil {
		a.gossip = gossip
		a.ready.require(condGossip)
	}
	a.ready.require(condListeners)
	set, warnings, err := LoadPolicies(cfg.Policy)
	for _, w := range warnings {
		log.Warn("policy", "warning", fmt.Sprint(w))
	}
	if err != nil {
		return nil, err
	}
	a.policies = policy.NewStore(set)
	a.live = proxy.NewLive()
	if a.istiod, err = newIstiod(cfg, a); err != nil {
		return nil, err
	}
	if a.istiod != nil {
		a.ready.require(condIstiod)
	}
	if err := a.bindAdmin(cfg.Admin); err != nil {
		return nil, err
	}
	if err := a.bindDNS(cfg); err != nil {
		a.closeListeners()
		return nil, err
	}
	if err := a.bindDataPath(cfg); err != nil {
		a.closeListeners()
		a.closeDNS()
		return nil, err
	}
	return a, nil
}

// closeListeners releases what New bound when New fails half-way.
func (a *App) closeListeners() {
	for _, s := range []*admin.Server{a.ctlSrv, a.adminSrv, a.readySrv, a.metrSrv} {
		if s != nil {
			s.Close()
		}
	}
}

func (a *App) bindAdmin(c config.Admin) error {
	hooks := a.adminHooks()
	ctlLn, err := admin.ListenControl(c.Socket)
	if err != nil {
		return fmt.Errorf("admin: control socket %s (admin.socket): %w", c.Socket, err)
	}
	adminLn, err := net.Listen("tcp", c.Address.String())
	if err != nil {
		ctlLn.Close()
		return fmt.Errorf("admin: listen on %s (admin.address): %w", c.Address, err)
	}
	readyLn, err := net.Listen("tcp", c.ReadinessAddress.String())
	if err != nil {
		ctlLn.Close()
		adminLn.Close()
		return fmt.Errorf("admin: listen on %s (admin.readiness_address): %w", c.ReadinessAddress, err)
	}
	metricsLn, err := net.Listen("tcp", c.MetricsAddress.String())
	if err != nil {
		ctlLn.Close()
		adminLn.Close()
		readyLn.Close()
		return fmt.Errorf("admin: listen on %s (admin.metrics_address): %w", c.MetricsAddress, err)
	}
	a.ctlSrv = admin.NewServer("control", ctlLn, admin.ControlHandler(hooks, a.log))
	a.adminSrv = admin.NewServer("admin", adminLn, admin.LocalHandler(hooks, c.Socket))
	a.readySrv = admin.NewServer("readiness", readyLn, admin.ReadinessHandler(hooks))
	a.metrSrv = admin.NewServer("metrics", metricsLn, admin.MetricsHandler(a.registry))
	return nil
}

// Run runs every component until ctx is done, /quitquitquit is called or a
// component fails; then it drains within the configured deadline.
func (a *App) Run(ctx context.Context, hup <-chan os.Signal) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	drain := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), a.cfg.Load().Node.DrainTimeout)
	}
	g.Go(func() error { return a.ctlSrv.Run(gctx, drain) })
	g.Go(func() error { return a.adminSrv.Run(gctx, drain) })
	g.Go(func() error { return a.readySrv.Run(gctx, drain) })
	g.Go(func() error { return a.metrSrv.Run(gctx, drain) })
	g.Go(func() error { return a.notify.watchdog(gctx, a.alive) })
	g.Go(func() error { return a.reloadLoop(gctx, hup) })
	g.Go(func() error { return a.runIdentity(gctx) })
	g.Go(func() error { return a.watchPolicies(gctx) })
	g.Go(func() error { return a.runGossip(gctx) })
	g.Go(func() error { return a.runIstiod(gctx) })
	g.Go(func() error { return a.runHealth(gctx) })
	g.Go(func() error { return a.dp.listeners.Run(gctx, drain) })
	g.Go(func() error { return a.watchCgroups(gctx) })
	g.Go(func() error { return a.runDNS(gctx) })
	// The listeners are bound, so they accept: capture can go in now.
	if err := a.installCaptures(gctx); err != nil {
		a.log.Error("capture rules not installed", "err", err)
		cancel()
		g.Wait()
		a.removeDNSCapture()
		a.exitCapture()
		return err
	}
	g.Go(func() error { return a.watchCapture(gctx) })
	g.Go(func() error {
		select {
		case <-a.quit:
			cancel()
		case <-gctx.Done():
		}
		return nil
	})

	a.ready.set(condListeners, true)
	if a.ids != nil { // as the identity goroutine will, but before READY's status line is written
		a.ready.set(condCertificates, a.ids.Ready())
	}
	a.log.Info("agent started", "version", Version, "node", a.cfg.Load().Node.Name,
		"control", a.ctlSrv.Addr().String(), "admin", a.adminSrv.Addr().String(), "readiness", a.readySrv.Addr().String())
	for _, w := range a.cfg.Load().Warnings() {
		a.log.Warn("configuration: " + w)
	}
	a.notify.ready(a.statusLine())

	<-gctx.Done()
	a.notify.stopping()
	a.log.Info("agent stopping", "drain_timeout", a.cfg.Load().Node.DrainTimeout.String())
	a.removeDNSCapture() // DNS fails open: the host's resolver answers while we drain
	err := g.Wait()
	a.exitCapture()
	if err != nil {
		a.log.Error("agent stopped with an error", "err", err)
		return err
	}
	a.log.Info("agent stopped")
	return nil
}

// alive is what the watchdog checks before it pings systemd: liveness, not
// readiness. An agent waiting for a seed or for SPIRE is alive and must not be
// restarted by the watchdog; one whose readiness state cannot be read (a
// deadlock) is not.
func (a *App) alive() bool {
	done := make(chan struct{})
	go func() { a.ready.state(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(time.Second):
		return false
	}
}

func (a *App) statusLine() string {
	if ok, missing := a.ready.state(); !ok {
		return fmt.Sprintf("not ready: waiting for %v", missing)
	}
	return fmt.Sprintf("ready: %d local workloads", len(a.cfg.Load().Workloads))
}

func (a *App) adminHooks() admin.Hooks {
	return admin.Hooks{
		ConfigDump: a.configDump,
		Level:      a.level.Level,
		SetLevel:   a.level.Set,
		ParseLevel: config.ParseLevel,
		Quit:       a.requestQuit,
		Ready:      a.ready.state,
	}
}

func (a *App) requestQuit() {
	select {
	case <-a.quit:
	default:
		close(a.quit)
	}
}
