package state

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// UseWaypointNone opts a workload or service out of waypoints.
const UseWaypointNone = "none"

// Waypoint is one instance of a waypoint: a node that serves as the L4
// waypoint of a scope. Instances with one Namespace/Name form one waypoint.
type Waypoint struct {
	Name              string       `json:"name"`
	Namespace         string       `json:"namespace"`
	ServiceAccount    string       `json:"serviceAccount"`
	TrustDomain       string       `json:"trustDomain"`
	ForServiceAccount string       `json:"forServiceAccount,omitempty"`
	Addresses         []netip.Addr `json:"addresses"`
	Node              string       `json:"node"`
	Local             bool         `json:"local"`
	Origin            Origin       `json:"origin,omitempty"`
	AddressProven     bool         `json:"addressProven,omitempty"`
	// Unready is an instance istiod reports not ready: it keeps its name's
	// binding to its identity (no one else takes the name meanwhile) and
	// takes no traffic.
	Unready bool `json:"unready,omitempty"`
}

// Key is the waypoint's "namespace/name".
func (w *Waypoint) Key() string { return w.Namespace + "/" + w.Name }

// Identity is the waypoint's SPIFFE identity.
func (w *Waypoint) Identity() (spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(w.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromSegments(td, "ns", w.Namespace, "sa", w.ServiceAccount)
}

// HasAddress reports whether a is one of the waypoint's addresses.
func (w *Waypoint) HasAddress(a netip.Addr) bool { return slices.Contains(w.Addresses, a.Unmap()) }

// waypointIndex finds waypoints by name and address.
type waypointIndex struct {
	all       []*Waypoint
	byKey     map[string][]*Waypoint // "ns/name" -> instances
	ready     map[string][]*Waypoint // "ns/name" -> the instances that take traffic
	byAddr    map[netip.Addr]*Waypoint
	conflicts []WaypointConflict
}

// WaypointConflict is an instance of a waypoint that was not used: its
// identity is not the one the waypoint's name is bound to.
type WaypointConflict struct {
	Waypoint string `json:"waypoint"`
	Node     string `json:"node"`
	Identity string `json:"identity"`
	Reason   string `json:"reason"`
}

func (c WaypointConflict) String() string {
	return fmt.Sprintf("waypoint %s: the instance on %s as %s is not used: %s", c.Waypoint, c.Node, c.Identity, c.Reason)
}

// A waypoint's name is bound to one identity (and scope): the one of its
// strongest instances (origin.go), else the one it had in the previous
// snapshot, else (trusted origins) the first; gossip instances of one rank
// that disagree and none established bind it to nothing. An instance with
// another identity is a conflict, not a second instance.
func newWaypointIndex(ws []*Waypoint, prev *Snapshot) waypointIndex {
	sorted := slices.Clone(ws)
	slices.SortFunc(sorted, func(a, b *Waypoint) int {
		return cmp.Or(compareStrings(a.Key(), b.Key()), cmp.Compare(a.rank(), b.rank()), compareStrings(a.Node, b.Node))
	})
	x := waypointIndex{byKey: map[string][]*Waypoint{}, ready: map[string][]*Waypoint{}, byAddr: map[netip.Addr]*Waypoint{}}
	for i := 0; i < len(sorted); {
		j := i + 1
		for j < len(sorted) && sorted[j].Key() == sorted[i].Key() {
			j++
		}
		x.bind(sorted[i:j], prev)
		i = j
	}
	return x
}

// bind keeps the instances of one waypoint (strongest first) that have the
// identity its name is bound to.
func (x *waypointIndex) bind(instances []*Waypoint, prev *Snapshot) {
	bound, reason := boundIdentity(instances, prev)
	for _, w := range instances {
		if bound == "" || w.identityKey() != bound {
			why := reason
			if bound != "" {
				why = "the name " + w.Key() + " is bound to " + bound
			}
			x.conflicts = append(x.conflicts, WaypointConflict{Waypoint: w.Key(), Node: w.Node, Identity: w.identityKey(), Reason: why})
			continue
		}
		x.all = append(x.all, w)
		x.byKey[w.Key()] = append(x.byKey[w.Key()], w)
		if !w.Unready {
			x.ready[w.Key()] = append(x.ready[w.Key()], w)
		}
		for _, a := range w.Addresses {
			if _, taken := x.byAddr[a]; !taken {
				x.byAddr[a] = w
			}
		}
	}
}

// boundIdentity is the identity key the waypoint's name is bound to, or "" and why.
func boundIdentity(instances []*Waypoint, prev *Snapshot) (string, string) {
	best := instances[0]
	agree := true
	for _, w := range instances {
		if w.rank() == best.rank() && w.identityKey() != best.identityKey() {
			agree = false
		}
	}
	if agree || best.rank() <= rankIstiod && !prevBound(prev, best.Key(), instances, best.rank()) {
		return best.identityKey(), ""
	}
	if prevBound(prev, best.Key(), instances, best.rank()) {
		return prev.wps.byKey[best.Key()][0].identityKey(), ""
	}
	return "", "instances of one rank with different identities and none established: the waypoint is not used"
}

// prevBound reports whether an instance of rank r has the identity the name
// was bound to in prev (so that a trusted source keeps its established choice).
func prevBound(prev *Snapshot, key string, instances []*Waypoint, r int) bool {
	if prev == nil || len(prev.wps.byKey[key]) == 0 {
		return false
	}
	id := prev.wps.byKey[key][0].identityKey()
	return slices.ContainsFunc(instances, func(w *Waypoint) bool { return w.rank() == r && w.identityKey() == id })
}

// identityKey is what binds a waypoint's name: its identity and scope.
func (w *Waypoint) identityKey() string {
	k := "spiffe://" + w.TrustDomain + "/ns/" + w.Namespace + "/sa/" + w.ServiceAccount
	if w.ForServiceAccount != "" {
		k += " (for " + w.ForServiceAccount + ")"
	}
	return k
}

// rank is how strongly an instance claims its waypoint's name (origin.go);
// a proof of its addresses does not matter here, its identity does.
func (w *Waypoint) rank() int { return claimRank(w.Local, w.Origin, false) }

// named resolves a use_waypoint reference made from namespace ns to the
// instances that take traffic. Do not modify the result.
func (x *waypointIndex) named(ns, ref string) []*Waypoint {
	if strings.Contains(ref, "/") {
		return x.ready[ref]
	}
	return x.ready[ns+"/"+ref]
}

// Waypoints returns every waypoint instance in use, ordered by key and rank. Do not modify.
func (s *Snapshot) Waypoints() []*Waypoint { return s.wps.all }

// WaypointConflicts returns the waypoint instances not used.
func (s *Snapshot) WaypointConflicts() []WaypointConflict { return s.wps.conflicts }

// WaypointByAddr finds the waypoint instance that serves on address a.
func (s *Snapshot) WaypointByAddr(a netip.Addr) (*Waypoint, bool) {
	w, ok := s.wps.byAddr[a.Unmap()]
	return w, ok
}

// WaypointOf returns the instances of the waypoint that serves workload w:
// the one its own declaration names (use_waypoint), none for a workload that
// names none, opts out or is not captured. Nothing is bound by namespace or
// service account alone (spec/routing.md, Istio 1.22 and later).
func (s *Snapshot) WaypointOf(w *Workload) []*Waypoint {
	if w.Tunnel != TunnelHBONE || w.UseWaypoint == "" || w.UseWaypoint == UseWaypointNone {
		return nil
	}
	return s.wps.named(w.Namespace, w.UseWaypoint)
}

// ServiceWaypoint returns the instances of the waypoint the service's own
// declaration names; none when it names none.
func (s *Snapshot) ServiceWaypoint(svc *Service) []*Waypoint {
	if svc.UseWaypoint == "" || svc.UseWaypoint == UseWaypointNone {
		return nil
	}
	return s.wps.named(svc.Namespace, svc.UseWaypoint)
}

// BoundWaypoints returns the instances of every waypoint bound to the
// service: the one it names and those of its weighted split.
func (s *Snapshot) BoundWaypoints(svc *Service) []*Waypoint {
	out := s.ServiceWaypoint(svc)
	for _, ww := range svc.WeightedWaypoints {
		if ww.Waypoint != "" && ww.Waypoint != UseWaypointNone {
			out = append(slices.Clip(out), s.wps.named(svc.Namespace, ww.Waypoint)...)
		}
	}
	return out
}

// PickServiceWaypoint chooses the waypoint one connection to the service
// takes: with a weighted split, one of its waypoints in proportion to its
// weight (0: never); else, or when every weight is 0, the one the service
// names. It returns the reference and its instances (none: not known).
func (s *Snapshot) PickServiceWaypoint(svc *Service, intn func(int) int) (string, []*Waypoint) {
	total := 0
	for _, ww := range svc.WeightedWaypoints {
		total += int(ww.Weight)
	}
	if total > 0 {
		n := intn(total)
		for _, ww := range svc.WeightedWaypoints {
			if n -= int(ww.Weight); n < 0 {
				return ww.Waypoint, s.wps.named(svc.Namespace, ww.Waypoint)
			}
		}
	}
	return svc.UseWaypoint, s.ServiceWaypoint(svc)
}
