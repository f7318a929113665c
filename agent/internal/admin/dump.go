package admin

import (
	"net/netip"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/routes"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/xds"
)

// Dump is what /config_dump serves, and what the CLI reads: the effective runtime configuration
// and the agent's state. The runtime Config holds no secret material (key files
// are referenced by path, never loaded into it), so it is shown as is.
type Dump struct {
	Version string         `json:"version"`
	Uptime  string         `json:"uptime"`
	Ready   bool           `json:"ready"`
	Waiting []string       `json:"waitingFor,omitempty"`
	Config  *config.Config `json:"config"`
	// Certificates held for the local workloads: identity and expiry, never keys.
	Certificates []identity.CertInfo `json:"certificates"`
	Workloads    []*state.Workload   `json:"workloads"`
	// Recognition says, per local workload UID, how its connections are attributed to it.
	Recognition map[string]string `json:"recognition"`
	Conflicts   []state.Conflict  `json:"conflicts,omitempty"`
	Services    []Service         `json:"services"`
	Waypoints   []*state.Waypoint `json:"waypoints"`
	// Gateways are the east-west gateways known per network (docs/multi-network.md).
	Gateways []*state.NetworkGateway `json:"gateways,omitempty"`
	// Routes are the Gateway API routes of the policy directory and what became of them (docs/waypoint.md).
	Routes []routes.Status `json:"routes,omitempty"`
	// ServiceConflicts are services declared differently by two nodes, and VIP collisions.
	ServiceConflicts []state.ServiceConflict `json:"serviceConflicts,omitempty"`
	// WaypointConflicts are waypoint instances whose identity is not the one their name is bound to.
	WaypointConflicts []state.WaypointConflict `json:"waypointConflicts,omitempty"`
	// GossipRejected counts the peers' records dropped, by reason (docs/gossip.md).
	GossipRejected map[string]uint64 `json:"gossipRejected,omitempty"`
	// GossipSettled: the gossip view counts as established, so that an owner keeps what it holds (docs/gossip.md).
	GossipSettled bool                   `json:"gossipSettled,omitempty"`
	Capture       Capture                `json:"capture"`
	Policies      []policy.PolicySummary `json:"policies"`
	Peers         []discovery.Member     `json:"peers"`
	// Unreachable are the addresses of workloads of nodes that failed or were cut off, by node: refused, never
	// passed through (docs/gossip.md).
	Unreachable map[netip.Addr]string `json:"unreachable,omitempty"`
	// Istiod is the link to istiod and what it delivered ([istio] discovery only).
	Istiod *xds.Status `json:"istiod,omitempty"`
	// IstiodEntries maps each local workload's UID to istiod's copy of it (its WorkloadEntry's UID): a local
	// workload missing here is one istiod does not know ([istio] discovery only).
	IstiodEntries map[string]string `json:"istiodEntries,omitempty"`
}

// Service is a service with the health of its endpoints and the waypoint it uses.
type Service struct {
	*state.Service
	Endpoints []Endpoint `json:"endpoints"`
	Waypoint  string     `json:"waypoint,omitempty"`
}

// Endpoint is one endpoint of a service, with its workload's addresses and health.
type Endpoint struct {
	Workload  string              `json:"workload"`
	Addresses []string            `json:"addresses"`
	Healthy   bool                `json:"healthy"`
	Capacity  uint32              `json:"capacity"`
	Ports     []state.ServicePort `json:"ports"`
	Waypoint  string              `json:"waypoint,omitempty"`
}

// Capture is the state of the capture table.
type Capture struct {
	Enabled   bool     `json:"enabled"`
	Installed bool     `json:"installed"`
	Table     string   `json:"table"`
	Chains    []string `json:"chains,omitempty"` // what a complete table has
}

// Peering counts the gossip peers: alive (alive or suspect: still answering some probes) among the known ones
// (every member but this host).
func (d *Dump) Peering() (alive, known int) {
	for _, p := range d.Peers {
		switch p.State {
		case "self":
			continue
		case "alive", "suspect":
			alive++
		}
		known++
	}
	return alive, known
}
