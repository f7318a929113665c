package app

import (
	"slices"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
	"github.com/ambient-agent/ambient-agent/agent/internal/capture"

	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/nft"
)

func servicesDump(snap *state.Snapshot) []admin.Service {
	out := make([]admin.Service, 0, len(snap.Services()))
	for _, svc := range snap.Services() {
		sd := admin.Service{Service: svc, Endpoints: []admin.Endpoint{}, Waypoint: waypointKey(snap.ServiceWaypoint(svc))}
		for _, e := range svc.Endpoints {
			ed := admin.Endpoint{Workload: e.UID, Healthy: e.Workload.Healthy, Capacity: e.Workload.Capacity, Ports: e.Ports,
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

func (a *App) configDump() any {
	ok, missing := a.ready.state()
	d := admin.Dump{
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
		d.Peers, d.GossipSettled, d.GossipRejected = a.gossip.Members(), a.gossipSettled(), rejections(a.gossip.Stats().Dropped)
	}
	meshDump(&d, a.state.Load())
	if rs := a.routes.Load(); rs != nil {
		snap := a.state.Load()
		d.Routes = rs.Statuses(func(ns, name string) bool {
			_, ok := snap.ServiceByKey(ns + "/" + name)
			return ok
		})
	}
	if a.gossip != nil {
		d.Unreachable = a.gossip.Unreachable()
	}
	if a.istiod != nil {
		st := a.istiod.Status()
		d.Istiod = &st
		d.IstiodEntries = map[string]string{}
		if c := a.istiodCopies.Load(); c != nil {
			d.IstiodEntries = *c
		}
	}
	d.Capture = captureDump(a.dp.table.c)
	return d
}

// rejections are the gossip records dropped as rejected, by reason.
func rejections(dropped map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for reason, n := range dropped {
		if discovery.IsRejection(reason) {
			out[reason] = n
		}
	}
	return out
}

// meshDump fills in the mesh as the snapshot has it.
func meshDump(d *admin.Dump, snap *state.Snapshot) {
	d.Workloads = snap.Workloads()
	d.Recognition = recognition(d.Config)
	d.Conflicts = snap.Conflicts()
	d.Services = servicesDump(snap)
	d.Waypoints = snap.Waypoints()
	d.Gateways = snap.Gateways()
	d.ServiceConflicts = snap.ServiceConflicts()
	d.WaypointConflicts = snap.WaypointConflicts()
}

// captureDump says what the agent installed (c nil: capture is off) and
// whether the kernel holds all of it now.
func captureDump(c *capture.Capture) admin.Capture {
	d := admin.Capture{Table: nft.TableFamily + " " + nft.TableName}
	if c == nil {
		return d
	}
	d.Enabled = true
	if rs := c.Installed(); rs != nil {
		d.Chains = rs.ChainNames()
		if st, err := nft.Inspect(0); err == nil && st.Present {
			d.Installed = !slices.ContainsFunc(d.Chains, func(ch string) bool { return !slices.Contains(st.Chains, ch) })
		}
	}
	return d
}
