package app

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/proxy"
	"github.com/ambient-agent/ambient-agent/agent/internal/xds"
)

const condCertificates = "certificates"

// localIdentities are the identities of the host's own workloads, of its
// waypoint, its east-west gateway and its hairpin identity: the only ones the
// agent holds certificates for.
func localIdentities(cfg *config.Config) ([]spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.Node.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("node.trust_domain: %w", err)
	}
	var ids []spiffeid.ID
	for _, w := range cfg.Workloads {
		id, err := identity.IstioID(td, w.Namespace, w.ServiceAccount)
		if err != nil {
			return nil, fmt.Errorf("workload %s: %w", w.Name, err)
		}
		ids = append(ids, id)
	}
	if wp := cfg.Waypoint; wp.Enabled {
		id, err := identity.IstioID(td, wp.Namespace, wp.ServiceAccount)
		if err != nil {
			return nil, fmt.Errorf("waypoint: %w", err)
		}
		ids = append(ids, id)
	}
	if g := cfg.Gateway; g.Enabled {
		id, err := identity.IstioID(td, g.Namespace, g.ServiceAccount)
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		ids = append(ids, id)
	}
	if h := cfg.Policy.Hairpin; h != nil {
		id, err := identity.IstioID(td, h.Namespace, h.ServiceAccount)
		if err != nil {
			return nil, fmt.Errorf("policy.hairpin_service_account: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// hairpinIdentity is the identity the host presents for the plaintext
// callers it hairpins (zero when none is configured), and whether hairpin
// enforcement is on.
func hairpinIdentity(cfg *config.Config) (spiffeid.ID, bool) {
	h := cfg.Policy.Hairpin
	if cfg.Policy.WaypointEnforcement != config.EnforceHairpin {
		return spiffeid.ID{}, false
	}
	if h == nil { // on, with nothing to present: hairpinned callers are refused
		return spiffeid.ID{}, true
	}
	td, err := spiffeid.TrustDomainFromString(cfg.Node.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, false
	}
	id, err := identity.IstioID(td, h.Namespace, h.ServiceAccount)
	return id, err == nil
}

// newIdentitySource builds the certificate source of the local workloads, or nil
// when the host runs none. A files source with a missing, expired or foreign
// certificate is an error here: the agent refuses to start.
func newIdentitySource(cfg *config.Config, log *slog.Logger) (identity.Source, error) {
	ids, err := localIdentities(cfg)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	td, _ := spiffeid.TrustDomainFromString(cfg.Node.TrustDomain)
	src, err := identity.New(identity.Options{
		Source:      cfg.Identity.Source,
		Dir:         cfg.Identity.Dir,
		SpireSocket: cfg.Identity.SpireSocket,
		TrustDomain: td,
		Identities:  ids,
		Logger:      log.With("component", "identity"),
		Istio:       istioCA(cfg),
	})
	if err != nil {
		return nil, fmt.Errorf("identity (source %q): %w", cfg.Identity.Source, err)
	}
	return src, nil
}

// runIdentity keeps the certificates current and mirrors their readiness.
func (a *App) runIdentity(ctx context.Context) error {
	if a.ids == nil {
		return nil
	}
	go a.trackIdentityReadiness(ctx)
	return a.ids.Run(ctx)
}

func (a *App) trackIdentityReadiness(ctx context.Context) {
	// Readiness also lapses when a certificate expires without a change event,
	// so poll as well as listen.
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		ready := a.ids.Ready()
		a.ready.set(condCertificates, ready)
		a.exportCertExpiry()
		select {
		case <-ctx.Done():
			return
		case <-a.ids.Changed():
			a.identitiesChanged()
		case <-t.C:
		}
	}
}

// exportCertExpiry publishes the expiry of every held certificate.
func (a *App) exportCertExpiry() {
	a.metrics.CertExpiry.Reset()
	for _, c := range a.ids.Certificates() {
		a.metrics.CertExpiry.WithLabelValues(c.Identity, c.Kind).Set(float64(c.NotAfter.Unix()))
	}
}

func dedupe(ids []spiffeid.ID) map[string]bool {
	set := map[string]bool{}
	for _, id := range ids {
		set[id.String()] = true
	}
	return set
}

// istioCA is where the `istio` source asks for certificates: istiod, as [istio] says.
func istioCA(cfg *config.Config) identity.IstioOptions {
	o := identity.IstioOptions{
		Address:    cfg.Istio.Address,
		ServerName: cfg.Istio.ServerName,
		RootCert:   cfg.Istio.RootCert,
		TokenDir:   cfg.Istio.TokenDir,
		// Always sent, as ztunnel does: istiod checks the token against the API
		// server of the cluster of that name.
		ClusterID: cmp.Or(cfg.Node.ClusterID, xds.DefaultClusterID),
		Plaintext: cfg.Istio.InsecurePlaintext,
		Dial:      istiodDialer(cfg),
	}
	if o.Plaintext {
		o.RootCert = ""
	}
	return o
}

// istiodDialer connects to istiod from marked sockets, as every connection the
// agent originates: with capture on, an unmarked one would be redirected into
// the agent's own outbound proxy (and refused while the agent is down).
func istiodDialer(cfg *config.Config) func(context.Context, string) (net.Conn, error) {
	d := markedDialer(cfg.Capture)
	return func(ctx context.Context, address string) (net.Conn, error) { return d.DialContext(ctx, "tcp", address) }
}

// gatewayRole is the data path's view of the [gateway] table; nil when the host is no gateway.
func gatewayRole(cfg *config.Config) *proxy.GatewayRole {
	g := cfg.Gateway
	if !g.Enabled {
		return nil
	}
	td, err := spiffeid.TrustDomainFromString(cfg.Node.TrustDomain)
	if err != nil {
		return nil
	}
	id, err := identity.IstioID(td, g.Namespace, g.ServiceAccount)
	if err != nil {
		return nil // localIdentities refused the configuration already
	}
	return &proxy.GatewayRole{Addresses: g.Addresses, Identity: id, Network: g.Network}
}
