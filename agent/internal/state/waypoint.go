package state

import (
	"net/netip"
	"slices"

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

// waypointIndex finds waypoints by name and by scope.
type waypointIndex struct {
	all    []*Waypoint
	byKey  map[string][]*Waypoint // "ns/name" -> instances
	byAddr map[netip.Addr]*Waypoint
}

func newWaypointIndex(ws []*Waypoint) waypointIndex {
	x := waypointIndex{all: slices.Clone(ws), byKey: map[string][]*Waypoint{}, byAddr: map[netip.Addr]*Waypoint{}}
	slices.SortFunc(x.all, func(a, b *Waypoint) int {
		if c := compareStrings(a.Key(), b.Key()); c != 0 {
			return c
		}
		return compareStrings(a.Node, b.Node)
	})
	for _, w := range x.all {
		x.byKey[w.Key()] = append(x.byKey[w.Key()], w)
		for _, a := range w.Addresses {
			if _, taken := x.byAddr[a]; !taken {
				x.byAddr[a] = w
			}
		}
	}
	return x
}

// named resolves a use_waypoint reference made from namespace ns.
func (x *waypointIndex) named(ns, ref string) []*Waypoint {
	for i := 0; i < len(ref); i++ {
		if ref[i] == '/' {
			return x.byKey[ref]
		}
	}
	return x.byKey[ns+"/"+ref]
}

// scoped returns the waypoint whose scope covers namespace ns (and, when sa is
// not empty, service account sa): a service-account waypoint wins over a
// namespace one (spec/routing.md).
func (x *waypointIndex) scoped(ns, sa string) []*Waypoint {
	var nsWide []*Waypoint
	for _, w := range x.all {
		if w.Namespace != ns {
			continue
		}
		if sa != "" && w.ForServiceAccount == sa {
			return x.byKey[w.Key()]
		}
		if w.ForServiceAccount == "" && nsWide == nil {
			nsWide = x.byKey[w.Key()]
		}
	}
	return nsWide
}

// Waypoints returns every waypoint instance, ordered by key and node. Do not modify.
func (s *Snapshot) Waypoints() []*Waypoint { return s.wps.all }

// WaypointByAddr finds the waypoint instance that serves on address a.
func (s *Snapshot) WaypointByAddr(a netip.Addr) (*Waypoint, bool) {
	w, ok := s.wps.byAddr[a.Unmap()]
	return w, ok
}

// WaypointOf returns the instances of the waypoint that serves workload w:
// none for a workload that is not captured or opted out.
func (s *Snapshot) WaypointOf(w *Workload) []*Waypoint {
	if w.Tunnel != TunnelHBONE || w.UseWaypoint == UseWaypointNone {
		return nil
	}
	if w.UseWaypoint != "" {
		return s.wps.named(w.Namespace, w.UseWaypoint)
	}
	return s.wps.scoped(w.Namespace, w.ServiceAccount)
}

// ServiceWaypoint returns the instances of the service's own waypoint: a
// named one, else its namespace's (service-account waypoints serve workloads
// only).
func (s *Snapshot) ServiceWaypoint(svc *Service) []*Waypoint {
	switch svc.UseWaypoint {
	case UseWaypointNone:
		return nil
	case "":
		return s.wps.scoped(svc.Namespace, "")
	}
	return s.wps.named(svc.Namespace, svc.UseWaypoint)
}
