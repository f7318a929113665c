package app

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

const condGossip = "gossip"

// newDiscovery builds the gossip node, or nil when gossip is off. A missing
// or bad key file is an error here: the agent refuses to start.
func newDiscovery(cfg *config.Config, a *App) (*discovery.Discovery, error) {
	if !cfg.Gossip.Enabled {
		return nil, nil
	}
	d, err := discovery.New(discovery.Options{
		NodeName:        cfg.Node.Name,
		Bind:            cfg.Gossip.Bind,
		Advertise:       cfg.Gossip.Advertise,
		Join:            cfg.Gossip.Join,
		KeyFile:         cfg.Gossip.KeyFile,
		InsecureDevMode: cfg.Gossip.InsecureDevMode,
		GracePeriod:     cfg.Gossip.GracePeriod,
		AgentVersion:    Version,
		Trust:           a.gossipTrust(cfg),
		Logger:          a.log.With("component", "gossip"),
		// Never nil here: the configuration resolves the default.
		GatewayIdentities: cfg.Gossip.GatewayIdentities,
	})
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	if err := d.SetLocal(a.localRecord(cfg)); err != nil {
		return nil, fmt.Errorf("gossip: this host's record: %w", err)
	}
	return d, nil
}

// gossipTrust signs this host's record with its workloads' certificates and
// checks the peers' against the trust bundle the identity source holds. A
// host with no identity has no bundle: it can check nothing, so it uses no
// peer's claims (and has no identity to reach them with anyway).
func (a *App) gossipTrust(cfg *config.Config) discovery.Trust {
	if a.ids == nil {
		a.log.Warn("gossip: this host holds no identity, so no trust bundle: it cannot check its peers' records and uses none")
	}
	return discovery.Trust{
		Bundles: func() x509bundle.Source {
			if a.ids == nil {
				return x509bundle.NewSet()
			}
			return a.ids.Snapshot()
		},
		SVID: func(id spiffeid.ID) (*x509svid.SVID, bool) {
			if a.ids == nil {
				return nil, false
			}
			return a.ids.Snapshot().SVID(id)
		},
		AcceptUnsigned: cfg.Gossip.AcceptUnsigned,
	}
}

// identitiesChanged re-signs this host's record with rotated or new
// certificates and checks the peers' records against a changed bundle.
func (a *App) identitiesChanged() {
	if a.gossip == nil {
		return
	}
	if err := a.gossip.Resign(); err != nil {
		a.log.Error("gossip: signing this host's record with the new certificates", "err", err)
	}
	a.gossip.Reverify()
}

// localRecord is what this host publishes: its own workloads (with their
// health), the services they back, its waypoint and its east-west gateway.
func (a *App) localRecord(cfg *config.Config) discovery.Record {
	in := a.localInput(cfg)
	var local []*state.Workload
	for _, w := range in.Workloads {
		if w.Local {
			local = append(local, w)
		}
	}
	r := discovery.Record{Workloads: local, Services: discovery.LocalServices(in.Services)}
	if len(in.Waypoints) > 0 {
		r.Waypoint = discovery.LocalWaypoint(in.Waypoints[0])
	}
	if g := cfg.Gateway; g.Enabled {
		r.Gateway = &discovery.Gateway{Network: g.Network, Addresses: g.Addresses, Namespace: g.Namespace,
			ServiceAccount: g.ServiceAccount, TrustDomain: cfg.Node.TrustDomain}
	}
	return r
}

// localInput is what the configuration declares, with the health of the
// local workloads as the checks last saw it.
func (a *App) localInput(cfg *config.Config) state.Input {
	in := state.InputFromConfig(cfg)
	for i, w := range in.Workloads {
		if w.Local && !a.healthy(w.Name, w.Namespace) {
			c := *w
			c.Healthy = false
			in.Workloads[i] = &c
		}
	}
	return in
}

// republishGossip publishes this host's record again after a reload.
func (a *App) republishGossip(cfg *config.Config) {
	if a.gossip == nil {
		return
	}
	if err := a.gossip.SetLocal(a.localRecord(cfg)); err != nil {
		a.log.Error("gossip: this host's new record was refused; peers keep the old one", "err", err)
	}
}

// rebindWait bounds how long gossip tries to bind its port again after a
// failed handoff, while the agent that failed lets go of it.
const rebindWait = 30 * time.Second

// runGossip keeps this node in the pool and feeds what it learns into the
// mesh state: every change publishes a new snapshot.
func (a *App) runGossip(ctx context.Context) error {
	if a.gossip == nil {
		return nil
	}
	select {
	case <-a.gossipGo: // a taking-over agent: once the old one released the port
	case <-ctx.Done():
		return nil
	}
	for rejoin := false; ; rejoin = true {
		err := a.gossipOnce(ctx)
		// Rejoining after a failed handoff, the port may still be the failed agent's for a moment.
		for deadline := time.Now().Add(rebindWait); err != nil && rejoin && ctx.Err() == nil && time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
			err = a.gossipOnce(ctx)
		}
		if err != nil || ctx.Err() != nil {
			return err
		}
		resumed := a.gossipCtl.released() // a handoff took the port; a failed one gives it back
		if resumed == nil {
			return nil
		}
		select {
		case <-resumed:
			a.log.Info("gossip: the handoff failed; this agent joins the pool again")
		case <-ctx.Done():
			return nil
		}
	}
}

// gossipOnce runs gossip until ctx is done or a handoff releases it.
func (a *App) gossipOnce(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopped := make(chan struct{})
	a.gossipCtl.running(cancel, stopped)
	errc := make(chan error, 1)
	go func() {
		defer close(stopped)
		errc <- a.gossip.Run(ctx)
	}()
	// Membership changes without a record change (a seed answering) show in
	// readiness through the tick.
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var dropped map[string]uint64
	for {
		select {
		case err := <-errc:
			return err
		case <-a.gossip.Changed():
			a.metrics.GossipEvents.WithLabelValues("records_changed").Inc()
			a.publishGossip()
		case <-t.C:
			dropped = a.countRejected(dropped)
		}
		a.updateGossipReadiness()
	}
}

// updateGossipReadiness: ready once the port is bound and this node has met
// another (or has no seed to meet).
func (a *App) updateGossipReadiness() {
	select {
	case <-a.gossip.Started():
	default:
		return
	}
	alive := a.gossip.Alive()
	prev := a.gossipAlive.Swap(int64(alive))
	switch {
	case int64(alive) > prev && prev > 0:
		a.metrics.GossipEvents.WithLabelValues("member_up").Add(float64(int64(alive) - prev))
	case int64(alive) < prev:
		a.metrics.GossipEvents.WithLabelValues("member_down").Add(float64(prev - int64(alive)))
	}
	a.metrics.GossipMembers.Set(float64(alive))
	switch {
	case alive <= 1: // alone again (isolated, a partition): the view settles anew when peers come back
		a.gossipMet.Store(0)
	case a.ids == nil || a.ids.Ready(): // with no trust bundle yet every record is refused: not a view
		a.gossipMet.CompareAndSwap(0, time.Now().UnixNano())
	}
	a.ready.set(condGossip, alive > 1 || len(a.cfg.Load().Gossip.Join) == 0)
}

// publishState rebuilds the mesh snapshot from this host's own workloads,
// gossip and istiod, and reports the contests it finds.
func (a *App) publishState() { a.state.Rebuild(a.stateInput, a.reportConflicts) }

// stateInput is what the next snapshot is built from.
func (a *App) stateInput(current *state.Snapshot) state.Input {
	cfg := a.cfg.Load()
	in := a.localInput(cfg)
	a.gossipInput(&in)
	a.istiodInput(&in)
	in.Previous = a.establishedState(current)
	in.Limits = state.Limits{Domains: append(slices.Clone(cfg.DNS.Domains), cfg.Gossip.AllowedHostnames...), VIPs: cfg.Gossip.AllowedVIPs,
		RequireAddressProof: cfg.Gossip.RequireAddressProof}
	return in
}

// gossipInput adds what the peers declare to in, and notes which generation of gossip's table it is.
func (a *App) gossipInput(in *state.Input) {
	if a.gossip != nil {
		v := a.gossip.Current()
		in.Workloads = append(slices.Grow(in.Workloads, len(v.Workloads)), v.Workloads...)
		in.Services = append(slices.Grow(in.Services, len(v.Services)), v.Services...)
		in.Unreachable = v.Unreachable
		in.Waypoints = append(in.Waypoints, v.Waypoints...)
		in.Gateways = append(in.Gateways, v.Gateways...)
		a.gossipGen = v.Generation
	}
}

// publishGossip takes what gossip changed into the mesh snapshot: as a patch when the changes are only of
// workloads' attributes (state.Snapshot.Patch: a cost of what changed), else by rebuilding. It reports whether
// it patched.
func (a *App) publishGossip() bool {
	return a.state.Patch(func(current *state.Snapshot, version uint64) (*state.Snapshot, bool) {
		gen, nodes, ok := a.gossip.Changes(a.gossipGen)
		if !ok || current == nil {
			return nil, false
		}
		next, ok := current.Patch(version, nodes)
		if ok {
			a.gossipGen = gen
		}
		return next, ok
	}, a.stateInput, a.reportConflicts)
}

// settleAfterMeeting is how long after meeting another member (with its
// certificates in hand) this agent's view of the mesh counts as established:
// long enough for the full state of its first push/pull, so that the order in
// which one exchange's records happen to be applied never decides a contest.
// An agent left alone settles anew when it meets peers again.
const settleAfterMeeting = 10 * time.Second

// establishedState is the snapshot whose owners a contest keeps (state.Input
// Previous): the current one once the gossip view has settled, none before.
func (a *App) establishedState(current *state.Snapshot) *state.Snapshot {
	if a.gossip != nil && !a.gossipSettled() {
		return nil
	}
	return current
}

func (a *App) gossipSettled() bool {
	met := a.gossipMet.Load()
	return met != 0 && time.Since(time.Unix(0, met)) >= settleAfterMeeting
}

// gossipPorts are the destination ports of gossip traffic, left uncaptured
// outbound so the agent's own gossip is never redirected into its proxy.
func gossipPorts(g config.Gossip) []uint16 {
	if !g.Enabled {
		return nil
	}
	ports := []uint16{g.Bind.Port()}
	for _, seed := range g.Join {
		if p, ok := seedPort(seed); ok && !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports
}

// seedPort is the port of a host:port seed.
func seedPort(seed string) (uint16, bool) {
	_, p, err := net.SplitHostPort(seed)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(p, 10, 16)
	return uint16(n), err == nil
}
