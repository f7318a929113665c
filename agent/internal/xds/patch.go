package xds

import (
	"maps"
	"reflect"
	"slices"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// Patch is what an Update changed since the last Update built from everything (generation Base): the newest
// version of each workload istiod replaced since with one that differs only in attributes no contest reads
// (health, capacity, locality, bound policies, canonical names, cluster), so that the agent can patch its mesh
// snapshot (state.Snapshot.PatchIstiod) instead of building it. Anything else builds the next Update from
// everything, with no Patch.
type Patch struct {
	Base      uint64
	Workloads []*state.Workload
	// Changed is the generation of the Update in which each of Workloads last changed: a reader that took in
	// generation g needs only those changed after it.
	Changed []uint64
	// at is where each of Workloads is in the Update's list (Update.Workloads).
	at []int
}

// Since returns the workloads of the patch that changed after generation g.
func (p *Patch) Since(g uint64) []*state.Workload {
	var out []*state.Workload
	for i, w := range p.Workloads {
		if p.Changed[i] > g {
			out = append(out, w)
		}
	}
	return out
}

// maxPatch bounds the workloads a Patch carries: past it the next Update is built from everything.
const maxPatch = 4096

// patch makes the next Update from prev when the store's changes since are workloads' attributes only.
func (c *Client) patch(prev *Update) (Update, bool) {
	s, v := c.store, c.view
	if v == nil || s.reshaped || prev.Generation == 0 {
		return Update{}, false
	}
	u := *prev
	u.Generation = prev.Generation + 1
	u.Policies, u.PolicyGeneration = policies(s), s.policyGen
	p := &Patch{Base: prev.Generation}
	type entry struct {
		w   *state.Workload
		gen uint64
		at  int
	}
	replaced := map[string]entry{}
	if prev.Patch != nil {
		p.Base = prev.Patch.Base
		for i, w := range prev.Patch.Workloads {
			replaced[w.UID] = entry{w, prev.Patch.Changed[i], prev.Patch.at[i]}
		}
	}
	for name, old := range s.touched {
		w := s.addresses[name].Workload
		i, kept := v.index[w.UID]
		if !kept || w.UID != old.Workload.UID || !attributesOnly(old.Workload, w) || v.waypointPod(w) {
			return Update{}, false
		}
		if reflect.DeepEqual(old.Workload, w) {
			continue // sent again as it was (a reconnection): nothing to patch
		}
		v.workloads[w.UID] = w
		replaced[w.UID] = entry{v.workload(w), u.Generation, i}
	}
	if len(replaced) > maxPatch {
		return Update{}, false
	}
	for _, uid := range slices.Sorted(maps.Keys(replaced)) {
		p.Workloads = append(p.Workloads, replaced[uid].w)
		p.Changed = append(p.Changed, replaced[uid].gen)
		p.at = append(p.at, replaced[uid].at)
	}
	u.Patch = p
	return u, true
}

// attributesOnly reports whether b, a new version of workload a, differs from it only in attributes no contest
// and no other part of the Update reads.
func attributesOnly(a, b *workload) bool {
	x, y := *a, *b
	for _, w := range []*workload{&x, &y} {
		w.Status, w.Capacity, w.Locality, w.AuthorizationPolicies, w.ClusterID = 0, 0, state.Locality{}, nil, ""
		w.CanonicalName, w.CanonicalRevision, w.WorkloadName = "", "", ""
	}
	return reflect.DeepEqual(x, y)
}

// waypointPod reports whether w is an instance of a waypoint (by a service or by its address): its Update's
// waypoints are made from it.
func (v *view) waypointPod(w *workload) bool {
	if v.podWPs[w.UID] {
		return true
	}
	for key := range w.Services {
		if v.waypoints[key] {
			return true
		}
	}
	return false
}
