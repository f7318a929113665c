package config

import (
	"encoding/json"
	"net/netip"
	"time"

	"github.com/ambient-agent/ambient-agent/ports"
)

// Waypoint enforcement modes (spec/routing.md).
const (
	EnforcePolicy  = "policy"  // the default, as ztunnel: no special handling, authorization policy decides
	EnforceHairpin = "hairpin" // opt-in: plaintext callers are sent through the waypoint; other HBONE callers get 401
)

// UseWaypointNone opts a workload or service out of waypoints.
const UseWaypointNone = "none"

// Health check kinds.
const (
	HealthTCP  = "tcp"
	HealthHTTP = "http"
)

// Defaults of services, waypoints, health checks and DNS.
const (
	DefaultClusterDomain = "cluster.local"
	DefaultWaypointName  = "waypoint"
	DefaultWaypointSA    = "waypoint"
	// DefaultGatewayNamespace and DefaultGatewaySA are the identity of Istio's east-west gateway
	// (samples/multicluster/gen-eastwest-gateway.sh).
	DefaultGatewayNamespace   = "istio-system"
	DefaultGatewaySA          = "istio-eastwestgateway"
	DefaultHealthInterval     = 2 * time.Second
	DefaultHealthTimeout      = time.Second
	DefaultUnhealthyThreshold = 2
	DefaultHealthyThreshold   = 1
)

// DefaultDNSListen is where the DNS proxy listens.
var DefaultDNSListen = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), ports.DNS).String()

// HealthCheck is how the local agent checks one of its workloads.
type HealthCheck struct {
	Kind               string        `json:"kind"`
	Port               uint16        `json:"port"`
	Path               string        `json:"path,omitempty"`
	Interval           time.Duration `json:"-"`
	Timeout            time.Duration `json:"-"`
	UnhealthyThreshold int           `json:"unhealthyThreshold"`
	HealthyThreshold   int           `json:"healthyThreshold"`
}

// MarshalJSON shows durations as "2s".
func (h HealthCheck) MarshalJSON() ([]byte, error) {
	type plain HealthCheck
	return json.Marshal(struct {
		plain
		Interval string `json:"interval"`
		Timeout  string `json:"timeout"`
	}{plain(h), h.Interval.String(), h.Timeout.String()})
}

// UnmarshalJSON reads what MarshalJSON writes (the CLI reads /config_dump).
func (h *HealthCheck) UnmarshalJSON(b []byte) error {
	type plain HealthCheck
	var v struct {
		plain
		Interval string `json:"interval"`
		Timeout  string `json:"timeout"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*h = HealthCheck(v.plain)
	if err := parseDuration(v.Interval, &h.Interval); err != nil {
		return err
	}
	return parseDuration(v.Timeout, &h.Timeout)
}

// Service is a service that local workloads back.
type Service struct {
	Name      string        `json:"name"`
	Namespace string        `json:"namespace"`
	Hostname  string        `json:"hostname"`
	VIPs      []netip.Addr  `json:"vips,omitempty"` // empty: allocated (spec/routing.md)
	Ports     []ServicePort `json:"ports"`
	// Workloads are names of [[workload]] entries of the service's namespace.
	Workloads   []string `json:"workloads"`
	UseWaypoint string   `json:"useWaypoint,omitempty"`
	// ServiceAccounts may also back the service on other hosts, besides the
	// service accounts of Workloads (docs/gossip.md).
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
}

// ServicePort maps a service port to the workloads' port.
type ServicePort struct {
	Port        uint16 `json:"port"`
	TargetPort  uint16 `json:"targetPort"`
	AppProtocol string `json:"appProtocol,omitempty"`
}

// Waypoint is this host's waypoint role.
type Waypoint struct {
	Enabled bool   `json:"enabled"`
	Name    string `json:"name,omitempty"`
	// Namespace and ServiceAccount are the waypoint's identity; its scope is
	// Namespace, narrowed to one account's workloads by ForServiceAccount.
	Namespace         string       `json:"namespace,omitempty"`
	ServiceAccount    string       `json:"serviceAccount,omitempty"`
	ForServiceAccount string       `json:"forServiceAccount,omitempty"`
	Addresses         []netip.Addr `json:"addresses,omitempty"`
}

// Gateway is this host's east-west gateway role (docs/multi-network.md): on Addresses, clients of other networks'
// double-HBONE tunnels to services with endpoints on Network are relayed to those endpoints.
type Gateway struct {
	Enabled bool `json:"enabled"`
	// Namespace and ServiceAccount are the gateway's identity (what it presents on Addresses).
	Namespace      string       `json:"namespace,omitempty"`
	ServiceAccount string       `json:"serviceAccount,omitempty"`
	Network        string       `json:"network,omitempty"`
	Addresses      []netip.Addr `json:"addresses,omitempty"`
}

// DNS is the DNS proxy setup.
type DNS struct {
	Enabled bool           `json:"enabled"`
	Listen  netip.AddrPort `json:"listen"`
	// Capture redirects the host's DNS (port 53) to the proxy.
	Capture bool `json:"capture"`
	// Upstreams are where other names go; empty: the host's resolv.conf.
	Upstreams []netip.AddrPort `json:"upstreams,omitempty"`
	// Domains are the search domains that short names are tried under.
	Domains []string `json:"domains"`
}
