package state

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Traffic is how clients reach a service beyond its VIPs and ports: the
// fields of istio.workload.Service that istiod sets (spec/routing.md). A
// gossip declaration carries none of it, so a gossip service is public,
// load balanced over its healthy endpoints, with no extra identities.
type Traffic struct {
	// SubjectAltNames are identities an endpoint of the service may present
	// besides its own (a ServiceEntry's subjectAltNames).
	SubjectAltNames []string `json:"subjectAltNames,omitempty"`
	// LoadBalancing is nil for the default: healthy endpoints by capacity.
	LoadBalancing *LoadBalancing `json:"loadBalancing,omitempty"`
	// NamespaceOnly is visibility NAMESPACE: clients of other namespaces do
	// not see the service, for routing or DNS.
	NamespaceOnly bool `json:"namespaceOnly,omitempty"`
	// WeightedWaypoints split the service's connections between waypoints;
	// empty: UseWaypoint alone.
	WeightedWaypoints []WeightedWaypoint `json:"weightedWaypoints,omitempty"`
	// VIPRanges are CIDR VIPs: an address in one that is no workload's is the
	// service's (ServiceByRange).
	VIPRanges []netip.Prefix `json:"vipRanges,omitempty"`
}

// WeightedWaypoint is one waypoint of a split, named as UseWaypoint is.
type WeightedWaypoint struct {
	Waypoint string `json:"waypoint"`
	Weight   uint32 `json:"weight"`
}

// LoadBalancing is istio.workload.LoadBalancing.
type LoadBalancing struct {
	Mode LBMode `json:"mode,omitempty"`
	// Preference are the scopes endpoints are ranked by, most important first.
	Preference []Scope `json:"routingPreference,omitempty"`
	// AllowAll is health_policy ALLOW_ALL (publishNotReadyAddresses):
	// unhealthy endpoints are chosen too.
	AllowAll bool `json:"healthAllowAll,omitempty"`
}

// LBMode is istio.workload.LoadBalancing.Mode.
type LBMode string

// Load balancing modes ("": UNSPECIFIED, no ranking).
const (
	LBStrict      LBMode = "STRICT"      // only endpoints that match every scope
	LBFailover    LBMode = "FAILOVER"    // the best-ranked endpoints
	LBPassthrough LBMode = "PASSTHROUGH" // to the original destination, no endpoint (resolution NONE)
)

// Scope is istio.workload.LoadBalancing.Scope.
type Scope string

// Locality scopes, as in the workload API.
const (
	ScopeRegion  Scope = "REGION"
	ScopeZone    Scope = "ZONE"
	ScopeSubzone Scope = "SUBZONE"
	ScopeNode    Scope = "NODE"
	ScopeCluster Scope = "CLUSTER"
	ScopeNetwork Scope = "NETWORK"
)

// Locality is where a workload runs (istio.workload.Locality).
type Locality struct {
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	Subzone string `json:"subzone,omitempty"`
}

// ServiceByRange finds the service with a CIDR VIP that contains a, for a
// client of namespace ns: the longest prefix, a service of the client's
// namespace first, then the first in key order; one the client may not see
// is skipped (spec/routing.md, services lookup).
func (s *Snapshot) ServiceByRange(a netip.Addr, ns string) (*Service, bool) {
	a = a.Unmap()
	var best *Service
	bits := -1
	for _, svc := range s.ranged {
		if !svc.VisibleTo(ns) {
			continue
		}
		for _, p := range svc.VIPRanges {
			if !p.Contains(a) {
				continue
			}
			switch {
			case p.Bits() > bits, p.Bits() == bits && svc.Namespace == ns && best.Namespace != ns:
				best, bits = svc, p.Bits()
			}
		}
	}
	return s.freshService(best), best != nil
}

// ParseLocality reads "region/zone/subzone" (trailing parts may be left out).
func ParseLocality(s string) Locality {
	var l Locality
	parts := strings.SplitN(s, "/", 3)
	for i, p := range []*string{&l.Region, &l.Zone, &l.Subzone} {
		if i < len(parts) {
			*p = parts[i]
		}
	}
	return l
}

// String is the locality as ParseLocality reads it, trailing empty parts left out.
func (l Locality) String() string {
	return strings.TrimRight(l.Region+"/"+l.Zone+"/"+l.Subzone, "/")
}

// Passthrough reports whether the service's connections go to the address
// the client dialled, not to an endpoint (ServiceEntry resolution NONE).
func (s *Service) Passthrough() bool {
	return s.LoadBalancing != nil && s.LoadBalancing.Mode == LBPassthrough
}

// VisibleTo reports whether a client of namespace ns may use the service; a
// client of no known namespace sees only public services.
func (s *Service) VisibleTo(ns string) bool { return !s.NamespaceOnly || ns == s.Namespace }

// ExtraIdentities are the service's subject alt names that are SPIFFE IDs:
// what an endpoint may present besides its own identity. Others are skipped.
func (s *Service) ExtraIdentities() []spiffeid.ID {
	var out []spiffeid.ID
	for _, san := range s.SubjectAltNames {
		if id, err := spiffeid.FromString(san); err == nil && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// PickEndpoint chooses where a connection from src (nil: unknown) to service
// port p goes (spec/routing.md, endpoint selection): among the endpoints that
// serve p, healthy unless the service allows all, ranked by locality when the
// service says so, at random weighted by capacity; a capacity of 0 is never
// chosen. intn is rand.IntN in production. It returns the endpoint and its
// target port.
func PickEndpoint(svc *Service, p uint16, src *Workload, intn func(int) int) (*Endpoint, uint16, bool) {
	lb := svc.LoadBalancing
	if lb == nil {
		lb = &LoadBalancing{}
	}
	// rankOf is e's rank among the candidates, -1 when it is none. Ranking is
	// cheap: it is done again rather than kept (no allocation per connection).
	rankOf := func(e *Endpoint) int {
		if _, ok := e.TargetPort(p); !ok || e.Workload.Capacity == 0 || !e.Workload.Healthy && !lb.AllowAll {
			return -1
		}
		if r, ok := lb.rank(src, e.Workload); ok {
			return r
		}
		return -1
	}
	best, total := -1, 0
	for _, e := range svc.Endpoints {
		switch r := rankOf(e); {
		case r > best:
			best, total = r, int(e.Workload.Capacity)
		case r == best && r >= 0:
			total += int(e.Workload.Capacity)
		}
	}
	if total == 0 {
		return nil, 0, false
	}
	if intn == nil {
		intn = rand.IntN
	}
	n := intn(total)
	for _, e := range svc.Endpoints {
		if rankOf(e) != best {
			continue
		}
		if n -= int(e.Workload.Capacity); n < 0 {
			target, _ := e.TargetPort(p)
			return e, target, true
		}
	}
	return nil, 0, false
}

// rank counts the leading scopes of the preference w shares with src, up to
// the first it does not; false when the mode is STRICT and w misses one. A
// leading NETWORK is preferred, not required: endpoints on the source's
// network outrank the others, and a mismatch there does not end the count. Without a source (the waypoint role, which has no workload of
// its own here), every endpoint ranks 0.
func (lb *LoadBalancing) rank(src, w *Workload) (int, bool) {
	if len(lb.Preference) == 0 || lb.Mode != LBStrict && lb.Mode != LBFailover {
		return 0, true
	}
	if src == nil {
		return 0, true
	}
	if !placementTrusted(w) {
		// A gossip peer says where its workloads run: it could claim every
		// client's zone and take all their traffic. It ranks last, and STRICT
		// never takes it.
		return 0, lb.Mode != LBStrict
	}
	rank := 0
	for i, scope := range lb.Preference {
		if i == 0 && scope == ScopeNetwork {
			if sameScope(scope, src, w) {
				rank += sameNetwork // outranks any count of the scopes after it
			}
			continue
		}
		if sameScope(scope, src, w) {
			rank++
			continue
		}
		if lb.Mode == LBStrict {
			return 0, false
		}
		break
	}
	return rank, true
}

// placementTrusted reports whether w's locality, node, cluster and network
// come from a source the agent trusts with them: this host's configuration,
// or istiod.
func placementTrusted(w *Workload) bool {
	return w.Local || w.Origin == OriginIstiod || w.Origin == OriginConfig
}

// sameNetwork is the weight of a leading NETWORK match: more than every
// other scope together.
const sameNetwork = 1 << 8

// sameScope reports whether a and b share scope s. An unknown scope matches.
func sameScope(s Scope, a, b *Workload) bool {
	switch s {
	case ScopeRegion:
		return a.Locality.Region == b.Locality.Region
	case ScopeZone:
		return a.Locality.Zone == b.Locality.Zone
	case ScopeSubzone:
		return a.Locality.Subzone == b.Locality.Subzone
	case ScopeNode:
		return a.Node == b.Node
	case ScopeCluster:
		return a.ClusterID == b.ClusterID
	case ScopeNetwork:
		return a.Network == b.Network
	}
	return true
}
