package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
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

	ids      identity.Source // nil when the host runs no workload
	state    *state.Store
	dp       dataPath
	dns      *dnsProxy
	policies *policy.Store // the policy directory's and istiod's, merged
	live     *proxy.Live
	gossip   *discovery.Discovery // nil when gossip is off
	istiod   *xds.Client          // nil without [istio] discovery
	health   *health.Checker
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
		path:     cfg.Path,
		log:      log,
		level:    level,
		ready:    newReadiness(),
		notify:   notifier{log: log},
		started:  time.Now(),
		quit:     make(chan struct{}),
		registry: prometheus.NewRegistry(),
		warn:     telemetry.NewLimiter(time.Second),
		live:     proxy.NewLive(),
	}
	a.cfg.Store(cfg)
	a.metrics = telemetry.NewMetrics(a.registry, Version)
	if err := a.build(cfg); err != nil {
		return nil, err
	}
	if err := a.bind(cfg); err != nil {
		return nil, err
	}
	return a, nil
}

// build makes the components, in the order they depend on each other, and
// says which readiness conditions they bring.
func (a *App) build(cfg *config.Config) error {
	if err := a.newHealth(cfg); err != nil {
		return fmt.Errorf("health checks: %w", err)
	}
	a.state = state.NewStore(a.localInput(cfg))
	var err error
	if a.ids, err = newIdentitySource(cfg, a.log); err != nil {
		return err
	}
	a.ready.requireIf(a.ids != nil, condCertificates)
	if a.gossip, err = newDiscovery(cfg, a); err != nil {
		return err
	}
	a.ready.requireIf(a.gossip != nil, condGossip)
	set, err := a.loadPolicies(cfg.Policy)
	if err != nil {
		return err
	}
	a.policies = policy.NewStore(set)
	if a.istiod, err = newIstiod(cfg, a); err != nil {
		return err
	}
	a.ready.requireIf(a.istiod != nil, condIstiod)
	return nil
}

// bind binds every listener, or none.
func (a *App) bind(cfg *config.Config) error {
	a.ready.require(condListeners)
	if err := a.bindAdmin(cfg.Admin); err != nil {
		return err
	}
	var err error
	if a.dns, err = bindDNS(cfg, a.state, a.log, a.registry); err != nil {
		a.closeAdmin()
		return err
	}
	if err := a.bindDataPath(cfg); err != nil {
		a.closeAdmin()
		a.dns.close()
		return err
	}
	return nil
}

// closeAdmin releases the admin listeners when New fails half-way.
func (a *App) closeAdmin() {
	for _, s := range a.adminServers() {
		s.Close()
	}
}

func (a *App) adminServers() []*admin.Server {
	return []*admin.Server{a.ctlSrv, a.adminSrv, a.readySrv, a.metrSrv}
}

// bindAdmin binds the control socket and the admin, readiness and metrics
// ports, or none of them.
func (a *App) bindAdmin(c config.Admin) (err error) {
	var bound []net.Listener
	defer func() {
		if err != nil {
			for _, ln := range bound {
				ln.Close()
			}
		}
	}()
	listen := func(addr netip.AddrPort, key string) net.Listener {
		if err != nil {
			return nil
		}
		ln, lerr := net.Listen("tcp", addr.String())
		if lerr != nil {
			err = fmt.Errorf("admin: listen on %s (%s): %w", addr, key, lerr)
			return nil
		}
		bound = append(bound, ln)
		return ln
	}
	ctlLn, err := admin.ListenControl(c.Socket)
	if err != nil {
		return fmt.Errorf("admin: control socket %s (admin.socket): %w", c.Socket, err)
	}
	bound = append(bound, ctlLn)
	adminLn, readyLn := listen(c.Address, "admin.address"), listen(c.ReadinessAddress, "admin.readiness_address")
	metricsLn := listen(c.MetricsAddress, "admin.metrics_address")
	if err != nil {
		return err
	}
	hooks := a.adminHooks()
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
	a.start(g, gctx, hup)
	// The listeners are bound, so they accept: capture can go in now.
	if err := a.installCaptures(gctx); err != nil {
		a.log.Error("capture rules not installed", "err", err)
		cancel()
		g.Wait()
		a.dns.removeCapture()
		a.dp.table.exit()
		return err
	}
	g.Go(func() error { return a.dp.table.watch(gctx) })
	g.Go(func() error {
		select {
		case <-a.quit:
			cancel()
		case <-gctx.Done():
		}
		return nil
	})
	a.announce()
	<-gctx.Done()
	return a.stop(g)
}

// start runs every component in g.
func (a *App) start(g *errgroup.Group, ctx context.Context, hup <-chan os.Signal) {
	drain := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), a.cfg.Load().Node.DrainTimeout)
	}
	for _, s := range a.adminServers() {
		g.Go(func() error { return s.Run(ctx, drain) })
	}
	g.Go(func() error { return a.notify.watchdog(ctx, a.alive) })
	g.Go(func() error { return a.reloadLoop(ctx, hup) })
	g.Go(func() error { return a.runIdentity(ctx) })
	g.Go(func() error { return a.watchPolicies(ctx) })
	g.Go(func() error { return a.runGossip(ctx) })
	g.Go(func() error { return a.runIstiod(ctx) })
	g.Go(func() error { return a.runHealth(ctx) })
	g.Go(func() error { return a.dp.listeners.Run(ctx, drain) })
	g.Go(func() error { return a.dp.table.watchCgroups(ctx) })
	g.Go(func() error { return a.dns.run(ctx) })
}

// announce says the agent runs: readiness, the log and systemd (READY=1).
func (a *App) announce() {
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
}

// stop drains: DNS capture first (DNS fails open: the host's resolver answers
// while we drain), then every component within the deadline, then capture.
func (a *App) stop(g *errgroup.Group) error {
	a.notify.stopping()
	a.log.Info("agent stopping", "drain_timeout", a.cfg.Load().Node.DrainTimeout.String())
	a.dns.removeCapture()
	err := g.Wait()
	a.dp.table.exit()
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
