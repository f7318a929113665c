package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// DefaultRootNamespace is Istio's default root namespace.
const DefaultRootNamespace = "istio-system"

// Options tune Compile.
type Options struct {
	// RootNamespace is Istio's root namespace: its policies without a selector are GLOBAL, those with a
	// selector select workloads in every namespace, and its PeerAuthentication is the mesh-wide one.
	// Empty means DefaultRootNamespace.
	RootNamespace string
}

// Set is a compiled, immutable, indexed set of policies. Build it with Compile (or Load), add istiod's
// policies with WithXDS, and swap it in whole; it is safe for concurrent use. A nil *Set holds no policies.
type Set struct {
	rootNamespace string
	policies      []*Authorization // every compiled Authorization, by (namespace, name, kind); ord is the index
	global        []*Authorization // GLOBAL scope
	rootSelectors selectorIndex    // WORKLOAD_SELECTOR policies of the root namespace: every namespace
	namespaces    map[string]*namespacePolicies
	peers         peerIndex
	waypoint      waypointIndex // policies with targetRefs, for EvaluateWaypoint; not in policies
	summary       []PolicySummary
	xds           *xdsIndex // istiod's policies (WithXDS); nil when there are none
}

type namespacePolicies struct {
	wide      []*Authorization // NAMESPACE scope
	selectors selectorIndex    // WORKLOAD_SELECTOR scope
}

// Compile converts resources to the L4 form and indexes them by namespace and selector, so an evaluation
// looks only at the policies that can apply to its destination. It never fails: what the node agent
// cannot enforce is skipped or narrowed, as istiod does for ztunnel, and each such case is a Warning.
// Duplicates are not rejected here (LoadDir and Parse do that); both copies apply.
//
// The Set keeps references to the resources' maps and slices: do not modify them afterwards.
func Compile(resources []Resource, opts Options) (*Set, []Warning) {
	s := &Set{rootNamespace: cmp.Or(opts.RootNamespace, DefaultRootNamespace), namespaces: map[string]*namespacePolicies{}}
	res := slices.Clone(resources)
	compiled, atWaypoint, peerAuthns, warnings := s.convert(res)

	// Oldest first: the oldest PeerAuthentication of a level wins. Without timestamps, input order decides.
	slices.SortStableFunc(peerAuthns, func(a, b *Resource) int { return a.CreationTimestamp.Compare(b.CreationTimestamp) })
	peers, ws, ignored := compilePeerAuthentications(peerAuthns, s.rootNamespace)
	s.peers = peers
	warnings = append(warnings, ws...)
	for _, r := range peerAuthns {
		s.summary = append(s.summary, summarizePeerAuthentication(r, s.rootNamespace, ignored[r], ws))
	}

	// A new array: the sort below must not reorder compiled, which is indexed after it.
	s.policies = slices.Concat(compiled, peers.all())
	slices.SortStableFunc(s.policies, comparePolicies)
	for i, a := range s.policies {
		a.ord, a.key = i, a.Namespace+"/"+a.Name
		a.prepare()
	}
	for _, a := range compiled {
		s.index(a)
	}
	slices.SortStableFunc(atWaypoint, comparePolicies)
	for i, a := range atWaypoint {
		a.ord, a.key = i, a.Namespace+"/"+a.Name
		a.prepare()
		s.waypoint.add(a, s.rootNamespace)
	}
	s.waypoint.policies = atWaypoint
	slices.SortStableFunc(s.summary, func(a, b PolicySummary) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Kind, b.Kind))
	})
	return s, warnings
}

// convert compiles the AuthorizationPolicies, those for the node agent apart from those for waypoints,
// and returns the PeerAuthentications, which are resolved together.
func (s *Set) convert(res []Resource) (compiled, atWaypoint []*Authorization, peerAuthns []*Resource, warnings []Warning) {
	for i := range res {
		r := &res[i]
		switch {
		case r.Kind == KindAuthorizationPolicy && r.AuthorizationPolicy != nil:
			a, ws := convertAuthorizationPolicy(r, s.rootNamespace)
			warnings = append(warnings, ws...)
			switch {
			case a != nil && a.Scope == ScopeWaypoint:
				atWaypoint = append(atWaypoint, a)
			case a != nil:
				compiled = append(compiled, a)
			}
			if len(r.AuthorizationPolicy.TargetRefs) > 0 {
				s.waypoint.resources = append(s.waypoint.resources, *r)
			}
			s.summary = append(s.summary, summarizeAuthorizationPolicy(r, a, ws))
		case r.Kind == KindPeerAuthentication && r.PeerAuthentication != nil:
			peerAuthns = append(peerAuthns, r)
		case isRoute(r):
			// Gateway API routes are the routes package's (the waypoint's L7 routing), read from the same files.
		default:
			name := r.Name
			if r.Namespace != "" {
				name = r.Key()
			}
			warnings = append(warnings, Warning{Source: r.Source, Policy: name,
				Msg: fmt.Sprintf("%s (%s) is not used by the node agent; ignored", r.Kind, r.APIVersion)})
		}
	}
	return compiled, atWaypoint, peerAuthns, warnings
}

func comparePolicies(a, b *Authorization) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Kind, b.Kind))
}

func (s *Set) index(a *Authorization) {
	switch {
	case a.Scope == ScopeGlobal:
		s.global = append(s.global, a)
	case a.Scope == ScopeWorkloadSelector && a.Namespace == s.rootNamespace:
		s.rootSelectors.add(a)
	default:
		np := s.namespaces[a.Namespace]
		if np == nil {
			np = &namespacePolicies{}
			s.namespaces[a.Namespace] = np
		}
		if a.Scope == ScopeWorkloadSelector {
			np.selectors.add(a)
		} else {
			np.wide = append(np.wide, a)
		}
	}
}

// Len is the number of compiled Authorizations the node agent enforces (from AuthorizationPolicies, the
// DENY policies derived from PeerAuthentications, and istiod's); waypoint policies are not counted.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.policies) + s.xdsLen()
}

// RootNamespace is the root namespace the set was compiled with.
func (s *Set) RootNamespace() string {
	if s == nil {
		return DefaultRootNamespace
	}
	return s.rootNamespace
}

// Authorizations returns the compiled policies the node agent enforces, the local ones sorted by
// namespace, name and kind, then istiod's by namespace and name; waypoint policies are not among them.
// Their rules are shared with the Set: read them, never modify them.
func (s *Set) Authorizations() []Authorization {
	if s == nil {
		return nil
	}
	out := make([]Authorization, 0, s.Len())
	for _, a := range s.policies {
		out = append(out, *a)
	}
	if s.xds != nil {
		for _, a := range s.xds.policies {
			out = append(out, *a)
		}
	}
	return out
}

// WaypointPolicies returns the AuthorizationPolicies with targetRef/targetRefs, in input order: not
// enforced by the node agent, enforced by EvaluateWaypoint (except AUDIT and CUSTOM ones, skipped).
func (s *Set) WaypointPolicies() []Resource {
	if s == nil {
		return nil
	}
	return slices.Clone(s.waypoint.resources)
}

// isRoute reports whether r is a Gateway API route that the waypoint reads (package routes).
func isRoute(r *Resource) bool {
	group, _, _ := strings.Cut(r.APIVersion, "/")
	return group == "gateway.networking.k8s.io" && (r.Kind == "HTTPRoute" || r.Kind == "GRPCRoute" || r.Kind == "TCPRoute")
}
