package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
	"github.com/ambient-agent/ambient-agent/agent/internal/handoff"
	"github.com/ambient-agent/ambient-agent/agent/internal/health"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/proxy"
	"github.com/ambient-agent/ambient-agent/agent/internal/routes"
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
	quit    chan struct{}   // closed by /quitquitquit
	hurry   context.Context // ends every drain early: a stop during a handoff's drain

	ids      identity.Source // nil when the host runs no workload
	state    *state.Store
	dp       dataPath
	dns      *dnsProxy
	policies *policy.Store              // the policy directory's and istiod's, merged
	routes   atomic.Pointer[routes.Set] // the policy directory's Gateway API routes, for the waypoint at L7
	policyMu sync.Mutex                 // one policy directory load at a time
	live     *proxy.Live
	gossip   *discovery.Discovery // nil when gossip is off
	istiod   *xds.Client          // nil without [istio] discovery
	// registrations register the local workloads with auto_register through their WorkloadGroups.
	registrations []*xds.Client
	// istiodCopies maps each local workload's UID to the UID of istiod's copy of it (its WorkloadEntry), as the
	// last state built saw them: what doctor checks istiod knows.
	istiodCopies atomic.Pointer[map[string]string]
	health       *health.Checker
	// gossipAlive is the alive member count last seen, for member events.
	gossipAlive atomic.Int64
	// gossipMet is when this agent first saw another member (Unix nanoseconds; 0: not yet).
	gossipMet atomic.Int64
	// gossipGen is the generation of gossip's table the current snapshot holds (under the state store's build
	// lock: only its Rebuild and Patch callbacks touch it).
	gossipGen uint64
	// istiodBase is the generation of the last istiod update built from everything that the current snapshot
	// holds (xds.Patch.Base; under the state store's build lock, as gossipGen).
	istiodBase uint64
	istiodGen  uint64 // the generation of the istiod update the current snapshot holds (same lock)
	adminSrv   *admin.Server
	ctlSrv     *admin.Server // the control API, on the unix socket
	readySrv   *admin.Server
	metrSrv    *admin.Server
	warn       *telemetry.Limiter // rate-limits warnings: one per key per second
	registry   *prometheus.Registry
	metrics    *telemetry.Metrics
	carried    *telemetry.Carried // the registry, with what the agents this one replaced counted
	ctlLn      net.Listener       // the control socket's listener

	// Handoff (handoff.go).
	sockets     *handoff.Sockets  // the listening sockets, for the agent that replaces this one
	takeover    *handoff.Takeover // the running agent this one takes over from; nil on a fresh start
	handedState handoffState      // what that agent said
	gate        chan struct{}     // closed when the servers may accept
	gossipGo    chan struct{}     // closed when gossip may bind its port
	gossipCtl   gossipControl
	stopServing context.CancelFunc // stops accepting: the drain begins
	// leaveShared: at exit, leave the capture, zone and DNS tables and the return path in place: another agent
	// holds them (this one drains for it, or it never took them over).
	leaveShared atomic.Bool
	handedOff   atomic.Bool // this agent drains for the one that replaced it
	carryMu     sync.Mutex
	carryDone   bool // the final counters are written (under carryMu)
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
		notify:   newNotifier(log),
		started:  time.Now(),
		quit:     make(chan struct{}),
		registry: prometheus.NewRegistry(),
		warn:     telemetry.NewLimiter(time.Second),
		live:     proxy.NewLive(),
	}
	a.cfg.Store(cfg)
	a.metrics = telemetry.NewMetrics(a.registry, Version)
	if err := a.dialHandoff(cfg); err != nil {
		return nil, err
	}
	if err := a.build(cfg); err != nil {
		a.abandonTakeover()
		return nil, err
	}
	a.gossipCtl.d = a.gossip
	if err := a.bind(cfg); err != nil {
		a.abandonTakeover()
		return nil, err
	}
	return a, nil
}

// abandonTakeover leaves the running agent serving: this one failed to start.
func (a *App) abandonTakeover() {
	if a.takeover != nil {
		a.takeover.Abort()
	}
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
	a.registerWorkloadGauges()
	if a.gossip, err = newDiscovery(cfg, a); err != nil {
		return err
	}
	a.ready.requireIf(a.gossip != nil, condGossip)
	set, err := a.loadPolicies(cfg.Policy)
	if err != nil {
		return err
	}
	rs, err := a.loadRoutes(cfg.Policy)
	if err != nil {
		return err
	}
	a.routes.Store(rs)
	a.policies = policy.NewStore(set)
	if a.istiod, err = newIstiod(cfg, a); err != nil {
		return err
	}
	if a.registrations, err = newRegistrations(cfg, a); err != nil {
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
	if a.dns, err = bindDNS(cfg, a.state, a.sockets, a.log, a.registry); err != nil {
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
		ln, lerr := a.sockets.Listen("tcp "+addr.String(), func() (net.Listener, error) { return net.Listen("tcp", addr.String()) })
		if lerr != nil {
			err = fmt.Errorf("admin: listen on %s (%s): %w", addr, key, lerr)
			return nil
		}
		bound = append(bound, ln)
		return ln
	}
	ctlLn, err := a.sockets.Listen("unix "+c.Socket, func() (net.Listener, error) { return admin.ListenControl(c.Socket) })
	if err == nil && a.takeover != nil {
		ctlLn, err = admin.InheritedControl(ctlLn, c.Socket)
	}
	if err != nil {
		return fmt.Errorf("admin: control socket %s (admin.socket): %w", c.Socket, err)
	}
	bound = append(bound, ctlLn)
	a.ctlLn = ctlLn
	adminLn, readyLn := listen(c.Address, "admin.address"), listen(c.ReadinessAddress, "admin.readiness_address")
	metricsLn := listen(c.MetricsAddress, "admin.metrics_address")
	if err != nil {
		return err
	}
	hooks := a.adminHooks()
	a.ctlSrv = admin.NewServer("control", ctlLn, admin.ControlHandler(hooks, a.log))
	a.adminSrv = admin.NewServer("admin", adminLn, admin.LocalHandler(hooks, c.Socket))
	a.readySrv = admin.NewServer("readiness", readyLn, admin.ReadinessHandler(hooks))
	a.carried = telemetry.NewCarried(a.registry, c.HandoffSocket()+".metrics.")
	if a.takeover == nil {
		a.carried.Forget()
	}
	a.metrSrv = admin.NewServer("metrics", metricsLn, admin.MetricsHandler(a.carried))
	return nil
}

// Run runs every component until ctx is done, /quitquitquit is called, a
// component fails or a new agent took over; then it drains: within the
// configured deadline, or the handoff one.
func (a *App) Run(ctx context.Context, hup <-chan os.Signal) error {
	// The servers stop accepting first; identities, policies and istiod go on
	// until what they accepted has drained: policy changes still revoke.
	bgRoot, stopBg := context.WithCancel(context.Background())
	defer stopBg()
	bg, bgctx := errgroup.WithContext(bgRoot)
	serve, stopServing := context.WithCancel(ctx)
	defer stopServing()
	a.stopServing = stopServing
	stopOnFailure := context.AfterFunc(bgctx, stopServing)
	defer stopOnFailure()
	a.hurry = a.hurryOnStop(ctx)
	g, gctx := errgroup.WithContext(serve)
	a.startBackground(bg, bgctx)
	a.start(g, gctx, hup)
	// The listeners are bound, so they accept: capture can go in now.
	err := a.installCaptures(gctx)
	if err != nil {
		a.log.Error("capture rules not installed", "err", err)
	} else if a.takeover != nil {
		if err = a.takeOver(gctx); err != nil {
			a.log.Error("taking over from the running agent failed: it goes on serving", "err", err)
		}
	}
	if err != nil {
		// A failed takeover gives everything back in order: gossip stopped without leaving (the running agent
		// keeps this node's place), the ports and the owned tables released, and only then the running agent
		// told, which takes them back.
		if a.takeover != nil && a.gossip != nil {
			a.gossip.Handover()
		}
		stopServing()
		g.Wait()
		stopBg()
		bg.Wait()
		a.exitShared()
		a.abandonTakeover()
		return err
	}
	g.Go(func() error { return a.dp.table.watch(gctx) })
	g.Go(func() error {
		select {
		case <-a.quit:
			stopServing()
		case <-gctx.Done():
		}
		return nil
	})
	a.announce()
	if srv := a.serveHandoff(gctx); srv != nil {
		defer srv.Close()
	}
	<-gctx.Done()
	return a.stop(g, bg, stopBg)
}

// hurryOnStop is the context every drain is bounded by besides its deadline:
// when this agent drains for one that replaced it (an hour by default) and is
// then told to stop, it drains for node.drain_timeout more at most.
func (a *App) hurryOnStop(ctx context.Context) context.Context {
	hurry, cancel := context.WithCancel(context.Background())
	context.AfterFunc(ctx, func() {
		if a.handedOff.Load() {
			a.log.Info("told to stop while draining for the agent that replaced this one", "drain_timeout", a.cfg.Load().Node.DrainTimeout.String())
			time.AfterFunc(a.cfg.Load().Node.DrainTimeout, cancel)
		}
	})
	return hurry
}

// drain is the deadline of a server's drain.
func (a *App) drain() (context.Context, context.CancelFunc) {
	node := a.cfg.Load().Node
	d := node.DrainTimeout
	if a.handedOff.Load() {
		d = node.HandoffDrain
	}
	return context.WithTimeout(a.hurry, d)
}

// startBackground runs the components the drain needs in bg: identities,
// policies, istiod and the watchdog.
func (a *App) startBackground(bg *errgroup.Group, ctx context.Context) {
	bg.Go(func() error { return a.notify.watchdog(ctx, a.alive) })
	bg.Go(func() error { return a.runIdentity(ctx) })
	bg.Go(func() error { return a.watchPolicies(ctx) })
	bg.Go(func() error { return a.runIstiod(ctx) })
	bg.Go(func() error { return a.runRegistrations(ctx) })
}

// start runs the servers and what feeds them in g; the servers accept once
// the gate opens.
func (a *App) start(g *errgroup.Group, ctx context.Context, hup <-chan os.Signal) {
	// A server that never ran closes its sockets (its copies: a running agent
	// this one failed to take over from keeps its own).
	gated := func(run func() error, close func()) func() error {
		return func() error {
			if !a.waitGate(ctx) {
				close()
				return nil
			}
			return run()
		}
	}
	for _, s := range a.adminServers() {
		g.Go(gated(func() error { return s.Run(ctx, a.drain) }, func() { s.Close() }))
	}
	g.Go(func() error { return a.reloadLoop(ctx, hup) })
	g.Go(func() error { return a.runGossip(ctx) })
	g.Go(func() error { return a.runHealth(ctx) })
	g.Go(gated(func() error { return a.dp.listeners.Run(ctx, a.drain) }, a.dp.listeners.Close))
	g.Go(func() error { return a.dp.table.watchCgroups(ctx) })
	g.Go(gated(func() error { return a.dns.run(ctx) }, a.dns.close))
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
// while we drain), then every server within the deadline, then the background
// components, then capture. An agent that drained for the one that replaced it
// leaves every shared rule and table to that one.
func (a *App) stop(g, bg *errgroup.Group, stopBg context.CancelFunc) error {
	if a.handedOff.Load() {
		a.log.Info("draining for the agent that replaced this one", "handoff_drain_timeout", a.cfg.Load().Node.HandoffDrain.String())
	} else {
		a.notify.stopping()
		a.log.Info("agent stopping", "drain_timeout", a.cfg.Load().Node.DrainTimeout.String())
		a.dns.removeCapture()
	}
	err := g.Wait()
	stopBg()
	err = errors.Join(err, bg.Wait())
	if a.handedOff.Load() {
		a.carryMetrics(true)
	}
	a.exitShared()
	if err != nil {
		a.log.Error("agent stopped with an error", "err", err)
		return err
	}
	if a.handedOff.Load() {
		a.log.Info("agent stopped: drained for the agent that replaced it")
		return nil
	}
	a.log.Info("agent stopped")
	return nil
}

// exitShared deals with the capture, zone and DNS tables at exit: this agent's
// to remove, or another agent's to keep.
func (a *App) exitShared() {
	if a.leaveShared.Load() {
		a.dp.table.leave()
		a.dns.leave()
		return
	}
	a.dns.removeCapture()
	a.dp.table.exit()
}

// alive is what the watchdog checks before it pings systemd: liveness, not
// readiness. An agent waiting for a seed or for SPIRE is alive and must not be
// restarted by the watchdog; one whose readiness state cannot be read (a
// deadlock) is not.
func (a *App) alive() bool {
	if a.handedOff.Load() {
		return false // it serves nothing: a supervisor that still counts on it must learn it
	}
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
		Connections: func() any {
			return a.metrics.LiveConnections()
		},
		Probe:   a.probe,
		Explain: a.explain,
	}
}

func (a *App) requestQuit() {
	select {
	case <-a.quit:
	default:
		close(a.quit)
	}
}
