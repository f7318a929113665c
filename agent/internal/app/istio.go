package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/xds"
)

const condIstiod = "istiod"

// newIstiod builds the client that learns the cluster's workloads, services,
// waypoints and policies from istiod, or nil when [istio] discovery is off.
// It authenticates as the host's first identity: with its certificate when
// the agent holds one, and with its service-account token when there is one.
func newIstiod(cfg *config.Config, a *App) (*xds.Client, error) {
	if !cfg.Istio.Enabled || !cfg.Istio.Discovery {
		return nil, nil
	}
	ns, sa, ok := authIdentity(cfg)
	if !ok {
		return nil, errors.New("istio: discovery needs a local workload or waypoint to authenticate to istiod as")
	}
	o, err := istiodOptions(cfg, a, ns, sa)
	if err != nil {
		return nil, fmt.Errorf("istio: %w", err)
	}
	o.NodeID = xds.NodeIDFor(nodeIP(cfg), cfg.Node.Name, ns)
	o.Log = a.log.With("component", "istiod")
	o.Registerer = a.registry
	c, err := xds.New(o)
	if err != nil {
		return nil, fmt.Errorf("istio: %w", err)
	}
	return c, nil
}

// newRegistrations builds a registration client (xds.Options.Registration) for each local workload with
// auto_register: a stream of its own to istiod, authenticated as the workload, for as long as the agent runs.
func newRegistrations(cfg *config.Config, a *App) ([]*xds.Client, error) {
	if !cfg.Istio.Enabled {
		return nil, nil
	}
	var out []*xds.Client
	for _, w := range cfg.Workloads {
		if w.AutoRegister == "" {
			continue
		}
		o, err := istiodOptions(cfg, a, w.Namespace, w.ServiceAccount)
		if err != nil {
			return nil, fmt.Errorf("istio: registration of %s: %w", w.Name, err)
		}
		o.NodeID = xds.NodeIDFor(w.Addresses[0], w.Name, w.Namespace)
		o.Log = a.log.With("component", "istiod-registration", "workload", w.Namespace+"/"+w.Name)
		o.Registration = &xds.Registration{Group: w.AutoRegister, ServiceAccount: w.ServiceAccount,
			Addresses: w.Addresses, Labels: w.Labels}
		c, err := xds.New(o)
		if err != nil {
			return nil, fmt.Errorf("istio: registration of %s: %w", w.Name, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// runRegistrations keeps the registration streams open until ctx ends: closing them is how istiod learns that
// the workloads left (it deletes their WorkloadEntries after its grace period).
func (a *App) runRegistrations(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, c := range a.registrations {
		wg.Go(func() { _ = c.Run(ctx) })
	}
	wg.Wait()
	return nil
}

// istiodOptions are the options of a stream to istiod authenticated as ns/sa: istiod's address and what
// verifies it, the identity's certificate (once held) and token, the agent's marked dialer.
func istiodOptions(cfg *config.Config, a *App, ns, sa string) (xds.Options, error) {
	o := xds.Options{
		Address:    cfg.Istio.Address,
		ServerName: cfg.Istio.ServerName,
		RootCert:   cfg.Istio.RootCert,
		Plaintext:  cfg.Istio.InsecurePlaintext,
		ClusterID:  cfg.Node.ClusterID,
		Network:    cfg.Node.Network,
		Namespace:  ns,
		NodeName:   cfg.Node.Name,
		Dial:       istiodDialer(cfg),
		Token:      istiodToken(identity.IstioTokenPath(cfg.Istio.TokenDir, ns, sa), ns, sa, a.ids != nil),
	}
	if o.Plaintext {
		o.RootCert = ""
	}
	if a.ids != nil {
		var err error
		if o.TLS, err = istiodClientCert(cfg, a.ids, ns, sa); err != nil {
			return o, err
		}
	}
	return o, nil
}

// istiodToken reads the service-account token of ns/sa at each request: the
// kubelet's way, a file something else keeps fresh. With certificates, a
// missing token is not an error: the certificate authenticates.
func istiodToken(path, ns, sa string, haveCerts bool) func() (string, error) {
	return func() (string, error) {
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) && haveCerts {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("service-account token of %s/%s: %w", ns, sa, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
}

// istiodClientCert presents ns/sa's current certificate to istiod, once the
// identity source has issued it (before, the token alone authenticates).
func istiodClientCert(cfg *config.Config, ids identity.Source, ns, sa string) (func() (*tls.Config, error), error) {
	td, err := spiffeid.TrustDomainFromString(cfg.Node.TrustDomain)
	if err != nil {
		return nil, err
	}
	id, err := identity.IstioID(td, ns, sa)
	if err != nil {
		return nil, err
	}
	return func() (*tls.Config, error) {
		cert, ok := ids.Snapshot().Certificate(id)
		if !ok {
			return &tls.Config{}, nil
		}
		return &tls.Config{Certificates: []tls.Certificate{*cert}}, nil
	}, nil
}

// authIdentity is the identity the host presents to istiod: its first
// workload's, else its waypoint's.
func authIdentity(cfg *config.Config) (ns, sa string, ok bool) {
	if len(cfg.Workloads) > 0 {
		return cfg.Workloads[0].Namespace, cfg.Workloads[0].ServiceAccount, true
	}
	if cfg.Waypoint.Enabled {
		return cfg.Waypoint.Namespace, cfg.Waypoint.ServiceAccount, true
	}
	return "", "", false
}

// nodeIP is the address in the node id: the first IPv4 workload address.
func nodeIP(cfg *config.Config) netip.Addr {
	for _, w := range cfg.Workloads {
		for _, a := range w.Addresses {
			if a.Is4() {
				return a
			}
		}
	}
	return netip.Addr{}
}

// runIstiod keeps the stream to istiod and feeds what it learns into the
// mesh state and the enforced policies.
func (a *App) runIstiod(ctx context.Context) error {
	if a.istiod == nil {
		return nil
	}
	a.istiodMetrics()
	errc := make(chan error, 1)
	go func() { errc <- a.istiod.Run(ctx) }()
	var last istiodApplied
	for {
		select {
		case err := <-errc:
			return err
		case <-a.istiod.Changed():
			a.applyIstiod(&last)
		}
	}
}

// istiodApplied is what the agent took in of istiod's last update.
type istiodApplied struct {
	policyGen uint64
	enforced  bool
}

// applyIstiod takes istiod's current update in: its policies (compiled, and live connections judged again, only
// when they changed: most deltas are of addresses) and the mesh snapshot.
func (a *App) applyIstiod(last *istiodApplied) {
	u := a.istiod.Current()
	closed := 0
	if !last.enforced || u.PolicyGeneration != last.policyGen {
		closed = a.enforce(a.policies.SetXDS(u.Policies))
		last.policyGen, last.enforced = u.PolicyGeneration, true
	}
	a.publishIstiod()
	a.ready.set(condIstiod, a.istiod.Connected())
	a.log.Info("istiod: update applied", "workloads", u.WorkloadCount(), "services", len(u.Services),
		"waypoints", len(u.Waypoints), "policies", len(u.Policies), "connections_closed", closed)
}

// publishIstiod takes istiod's current update into the mesh snapshot: as a patch when it changed workloads'
// attributes only since the update the snapshot was built with (xds.Patch), else by rebuilding. It reports
// whether it patched.
func (a *App) publishIstiod() bool {
	return a.state.Patch(func(current *state.Snapshot, version uint64) (*state.Snapshot, bool) {
		u := a.istiod.Current()
		if u.Patch == nil || current == nil || u.Patch.Base != a.istiodBase {
			return nil, false
		}
		// istiod's copies of local workloads are merged into them: PatchIstiod finds no such workload, and
		// the snapshot is built
		next, ok := current.PatchIstiod(version, u.Patch.Since(a.istiodGen))
		if ok {
			a.istiodGen = u.Generation
		}
		return next, ok
	}, a.stateInput, a.reportConflicts)
}

// istiodInput is what istiod sent last, minus its copies of this host's own
// workloads (exported as WorkloadEntries, they come back): the local ones win,
// and take the policies istiod bound to their copies, and the waypoint and
// locality istiod gives them where the configuration sets none.
func (a *App) istiodInput(in *state.Input) {
	if a.istiod == nil {
		return
	}
	u := a.istiod.Current()
	a.istiodBase, a.istiodGen = u.Generation, u.Generation // the update the snapshot holds, and its lineage
	if u.Patch != nil {
		a.istiodBase = u.Patch.Base
	}
	local := map[netip.Addr]int{}
	for i, w := range in.Workloads {
		if w.Local {
			for _, addr := range w.Addresses {
				local[addr] = i
			}
		}
	}
	dropped := map[string]string{} // istiod UID -> local UID
	in.Workloads = slices.Grow(in.Workloads, u.WorkloadCount())
	in.Services = slices.Grow(in.Services, len(u.Services))
	for _, w := range u.Workloads() {
		if i, ok := ownCopy(local, in.Workloads, w); ok {
			lw := *in.Workloads[i]
			lw.AuthorizationPolicies = w.AuthorizationPolicies
			// What the cluster binds to the host's WorkloadEntry (istio.io/use-waypoint,
			// its locality) holds where the configuration says nothing: the cluster's
			// clients route by istiod's binding.
			if lw.UseWaypoint == "" {
				lw.UseWaypoint = w.UseWaypoint
			}
			if lw.Locality == (state.Locality{}) {
				lw.Locality = w.Locality
			}
			in.Workloads[i] = &lw
			dropped[w.UID] = lw.UID
			continue
		}
		in.Workloads = append(in.Workloads, w)
	}
	copies := make(map[string]string, len(dropped))
	for istiodUID, localUID := range dropped {
		copies[localUID] = istiodUID
	}
	a.istiodCopies.Store(&copies)
	for _, d := range u.Services {
		d.Workloads = renameEndpoints(d.Workloads, dropped)
		in.Services = append(in.Services, d)
	}
	in.Waypoints = append(in.Waypoints, u.Waypoints...)
	in.Gateways = append(in.Gateways, u.Gateways...)
}

// ownCopy finds the local workload an istiod workload stands for: same
// address and same identity.
func ownCopy(local map[netip.Addr]int, ws []*state.Workload, w *state.Workload) (int, bool) {
	for _, addr := range w.Addresses {
		i, ok := local[addr]
		if ok && ws[i].Namespace == w.Namespace && ws[i].ServiceAccount == w.ServiceAccount && !state.OffNetwork(ws[i].Network, w.Network) {
			return i, true
		}
	}
	return 0, false
}

// renameEndpoints points endpoints at istiod's copies of local workloads to the local ones.
func renameEndpoints(uids []string, renamed map[string]string) []string {
	if len(renamed) == 0 {
		return uids
	}
	out := make([]string, len(uids))
	for i, u := range uids {
		if l, ok := renamed[u]; ok {
			u = l
		}
		out[i] = u
	}
	return out
}

// istiodMetrics exports the link to istiod: whether it is up, and when istiod
// last answered, so that an alert can fire on a cluster state that is getting
// stale while the agent serves it.
func (a *App) istiodMetrics() {
	a.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ambient_agent_istiod_connected", Help: "1 while the stream to istiod is up and has delivered both subscriptions.",
		}, func() float64 {
			if a.istiod.Connected() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ambient_agent_istiod_last_response_timestamp_seconds", Help: "When istiod last answered (Unix seconds; 0: never).",
		}, func() float64 {
			if t := a.istiod.Status().LastResponse; !t.IsZero() {
				return float64(t.UnixNano()) / 1e9
			}
			return 0
		}),
	)
}
