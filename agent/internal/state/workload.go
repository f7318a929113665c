package state

import (
	"net/netip"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TunnelProtocol says how a workload is reached.
type TunnelProtocol string

// Tunnel protocols, as istio.workload.TunnelProtocol.
const (
	TunnelHBONE TunnelProtocol = "HBONE" // captured: reached over HBONE on port 15008
	TunnelNone  TunnelProtocol = "NONE"  // reached in plaintext
)

// Workload is one workload of the mesh, local or remote.
type Workload struct {
	UID            string       `json:"uid"` // unique in the mesh: "<node>/<namespace>/<name>"
	Name           string       `json:"name"`
	Namespace      string       `json:"namespace"`
	ServiceAccount string       `json:"serviceAccount"`
	TrustDomain    string       `json:"trustDomain"`
	Addresses      []netip.Addr `json:"addresses"`
	// Hostname is set for a workload known by name only (istiod: a DNS
	// ServiceEntry's host): it has no addresses, it is resolved at connect time.
	Hostname  string            `json:"hostname,omitempty"`
	Network   string            `json:"network,omitempty"`
	ClusterID string            `json:"clusterId,omitempty"`
	Node      string            `json:"node,omitempty"`
	Tunnel    TunnelProtocol    `json:"tunnelProtocol"`
	Labels    map[string]string `json:"labels,omitempty"`
	Healthy   bool              `json:"healthy"`
	// Capacity weighs the workload among a service's endpoints; 0 (istiod:
	// drained) is never chosen.
	Capacity uint32   `json:"capacity"`
	Locality Locality `json:"locality,omitzero"`
	// UseWaypoint is a waypoint's "name" (same namespace) or
	// "namespace/name"; "" and "none" mean none (spec/routing.md: explicit
	// binding only).
	UseWaypoint string `json:"useWaypoint,omitempty"`
	// Ports are the ports the workload serves, when it declares them: then it
	// may share its addresses with other workloads of its node, and agents
	// reach it with SNI (ServerName) so that its node presents its certificate.
	Ports []uint16 `json:"ports,omitempty"`
	// Primary marks the first workload of its node on each of its addresses:
	// the one a client without SNI (a ztunnel) reaches.
	Primary bool `json:"primary,omitempty"`
	// AuthorizationPolicies are the "namespace/name" keys of the policies
	// istiod bound to the workload (its selector policies, resolved by istiod).
	AuthorizationPolicies []string `json:"authorizationPolicies,omitempty"`
	Local                 bool     `json:"local"` // runs on this host
	// Origin is where the workload was learned; it ranks its claim on its
	// addresses (origin.go).
	Origin Origin `json:"origin,omitempty"`
	// AddressProven says the publisher's certificate names every address of
	// the workload (IP SANs): a gossip claim that beats unproven ones.
	AddressProven bool `json:"addressProven,omitempty"`
}

// Identity is the workload's SPIFFE identity, Istio style:
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
func (w *Workload) Identity() (spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(w.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromSegments(td, "ns", w.Namespace, "sa", w.ServiceAccount)
}

// ServerName is the SNI that selects this workload on a node where it shares
// an address; "" for a workload that declares no ports (one per address).
func (w *Workload) ServerName() string {
	if len(w.Ports) == 0 {
		return ""
	}
	return w.Name + "." + w.Namespace + ServerNameSuffix
}

// ServerNameSuffix ends every SNI our agents send.
const ServerNameSuffix = ".workload.ambient-agent"

// Serves reports whether the workload declares port p.
func (w *Workload) Serves(p uint16) bool { return slices.Contains(w.Ports, p) }

// HasAddress reports whether a is one of the workload's addresses.
func (w *Workload) HasAddress(a netip.Addr) bool {
	return slices.Contains(w.Addresses, a.Unmap())
}
