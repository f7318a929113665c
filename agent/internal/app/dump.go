package app

import (
	"slices"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/xds"
	"github.com/ambient-agent/ambient-agent/nft"
)

// configDump is what /config_dump serves: the effective runtime configuration
// and the agent's state. The runtime Config holds no secret material (key files
// are referenced by path, never loaded into it), so it is shown as is.
type configDump struct {
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
	Services    []serviceDump     `json:"services"`
	Waypoints   []*state.Waypoint `json:"waypoints"`
	// ServiceConflicts are services declared differently by two nodes, and VIP collisions.
	ServiceConflicts []state.ServiceConflict `json:"serviceConflicts,omitempty"`
	// WaypointConflicts are waypoint instances whose identity is not the one their name is bound to.
	WaypointConflicts []state.WaypointConflict `json:"waypointConflicts,omitempty"`
	// GossipRejected counts the peers' records dropped, by reason (docs/gossip.md).
	GossipRejected map[string]uint64 `json:"gossipRejected,omitempty"`
	// GossipSettled: the gossip view counts as established, so that an owner keeps what it holds (docs/gossip.md).
	GossipSettled bool                   `json:"gossipSettled,omitempty"`
	Capture       captureDump            `json:"capture"`
	Policies      []policy.PolicySummary `json:"policies"`
	Peers         []discovery.Member     `json:"peers"`
	// Istiod is the link to istiod and what it delivered ([istio] discovery only).
	Istiod *xds.Status `json:"istiod,omitempty"`
}

// serviceDump is a service with the health of its endpoints and the waypoint it uses.
type serviceDump struct {
	*state.Service
	Endpoints []endpointDump `json:"endpoints"`
	Waypoint  string         `json:"waypoint,omitempty"`
}

type endpointDump struct {
	Workload  string              `json:"workload"`
	Addresses []string            `json:"addresses"`
	Healthy   bool                `json:"healthy"`
	Capacity  uint32              `json:"capacity"`
	Ports     []state.ServicePort `json:"ports"`
	Waypoint  string              `json:"waypoint,omitempty"`
}

func servicesDump(snap *state.Snapshot) []serviceDump {
	out := make([]serviceDump, 0, len(snap.Services()))
	for _, svc := range snap.Services() {
		sd := serviceDump{Service: svc, Endpoints: []endpointDump{}, Waypoint: waypointKey(snap.ServiceWaypoint(svc))}
		for _, e := range svc.Endpoints {
			ed := endpointDump{Workload: e.UID, Healthy: e.Workload.Healthy, Capacity: e.Workload.Capacity, Ports: e.Ports,
				Waypoint: waypointKey(snap.WaypointOf(e.Workload))}
			for _, a := range e.Workload.Addresses {
				ed.Addresses = append(ed.Addresses, a.String())
			}
			sd.Endpoints = append(sd.Endpoints, ed)
		}
		out = append(out, sd)
	}
	return out
}

func waypointKey(instances []*state.Waypoint) string {
	if len(instances) == 0 {
		return ""
	}
	return instances[0].Key()
}

type captureDump struct {
	Enabled   bool     `json:"enabled"`
	Installed bool     `json:"installed"`
	Table     string   `json:"table"`
	Chains    []string `json:"chains,omitempty"` // what a complete table has
}

func (a *App) configDump() any {
	ok, missing := a.ready.state()
	d := configDump{
		Version: Version,
		Uptime:  time.Since(a.started).Round(time.Second).String(),
		Ready:   ok,
		Waiting: missing,
		Config:  a.cfg.Load(),
	}
	if a.ids != nil {
		d.Certificates = a.ids.Certificates()
	}
	d.Policies = a.policies.Load().Summary()
	if a.gossip != nil {
		d.Peers = a.gossip.Members()
		d.GossipSettled = a.gossipSettled()
		d.GossipRejected = map[string]uint64{}
		for reason, n := range a.gossip.Stats().Dropped {
			if discovery.IsRejection(reason) {
				d.GossipRejected[reason] = n
			}
		}
	}
	snap := a.state.Load()
	d.Workloads = snap.Workloads()
	d.Recognition = recognition(d.Config)
	d.Conflicts = snap.Conflicts()
	d.Services = servicesDump(snap)
	d.Waypoints = snap.Waypoints()
	d.ServiceConflicts = snap.ServiceConflicts()
	d.WaypointConflicts = snap.WaypointConflicts()
	if a.istiod != nil {
		st := a.istiod.Status()
		d.Istiod = &st
	}
	d.Capture.Table = nft.TableFamily + " " + nft.TableName
	if c := a.dp.capture; c != nil {
		d.Capture.Enabled = true
		// Chains are what the agent installed; Installed says whether the
		// kernel holds them now.
		if rs := c.Installed(); rs != nil {
			d.Capture.Chains = rs.ChainNames()
			if st, err := nft.Inspect(0); err == nil && st.Present {
				d.Capture.Installed = !slices.ContainsFunc(d.Capture.Chains, func(ch string) bool { return !slices.Contains(st.Chains, ch) })
			}
		}
	}
	return d
}
