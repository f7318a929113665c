package config

import (
	"net"
	"strconv"
	"strings"
)

// Defaults of [istio].
const (
	DefaultIstioRootCert = "/etc/ambient-agent/istio/root-cert.pem"
	DefaultIstioTokenDir = "/etc/ambient-agent/istio/tokens"
)

// Istio is how the host joins an Istio cluster: istiod's address, what
// verifies it, and the service-account tokens it authenticates with.
type Istio struct {
	Enabled bool `json:"enabled"`
	// Address is istiod's gRPC address, host:port (15012, e.g. through an east-west gateway).
	Address string `json:"address,omitempty"`
	// ServerName is the name istiod's certificate is checked for; "" means the host of Address.
	ServerName string `json:"serverName,omitempty"`
	// RootCert is the PEM bundle that verifies istiod (the mesh root).
	RootCert string `json:"rootCert,omitempty"`
	// TokenDir holds one service-account token per identity: <dir>/<namespace>/<service account>.
	TokenDir string `json:"tokenDir,omitempty"`
	// Discovery learns the cluster's workloads, services, waypoints and policies from istiod.
	Discovery bool `json:"discovery"`
	// InsecurePlaintext talks to istiod without TLS: for tests only.
	InsecurePlaintext bool `json:"insecurePlaintext,omitempty"`
}

// istio builds [istio]; hasLocalIdentity tells whether the host has a local
// workload or an enabled waypoint, the identity discovery authenticates to
// istiod as (the first workload, else the waypoint: app.authIdentity).
func (b *builder) istio(f IstioFile, id Identity, hasLocalIdentity bool) Istio {
	i := Istio{
		Enabled:           f.Enabled,
		Address:           f.Address,
		ServerName:        f.ServerName,
		RootCert:          orDefault(f.RootCert, DefaultIstioRootCert),
		TokenDir:          orDefault(f.TokenDir, DefaultIstioTokenDir),
		Discovery:         f.Discovery == nil || *f.Discovery,
		InsecurePlaintext: f.InsecurePlaintext,
	}
	if id.Source == SourceIstio && !i.Enabled {
		b.addf("identity.source", "%q needs [istio] enabled = true and its address", SourceIstio)
	}
	if !i.Enabled {
		return i
	}
	host, port, err := net.SplitHostPort(i.Address)
	switch {
	case i.Address == "":
		b.addf("istio.address", "is required, e.g. \"istiod.istio-system.svc:15012\"")
	case err != nil:
		b.addf("istio.address", "%q is not host:port", i.Address)
	default:
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			b.addf("istio.address", "%q has no valid port", i.Address)
		}
		if !IsDNSSubdomain(host) && net.ParseIP(host) == nil {
			b.addf("istio.address", "%q is neither an IP address nor a DNS name", host)
		}
	}
	if i.ServerName != "" && !IsDNSSubdomain(i.ServerName) {
		b.addf("istio.server_name", "%q is not a DNS name", i.ServerName)
	}
	for key, p := range map[string]string{"istio.root_cert": i.RootCert, "istio.token_dir": i.TokenDir} {
		if !strings.HasPrefix(p, "/") {
			b.addf(key, "%q is not an absolute path", p)
		}
	}
	if i.Discovery && !hasLocalIdentity {
		b.addf("istio.discovery", "needs a local [[workload]] or an enabled [waypoint] to authenticate to istiod as; declare one, or set discovery = false")
	}
	if !i.Discovery && id.Source != SourceIstio {
		b.addf("istio.enabled", "neither discovery nor identity.source = %q uses istiod; disable [istio] or use one", SourceIstio)
	}
	return i
}
