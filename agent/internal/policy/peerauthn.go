package policy

import (
	"fmt"
	"slices"
	"strings"
)

// PeerAuthentication, the way istiod resolves it for ztunnel (ambient: convertedSelectorPeerAuthentications
// and convertPeerAuthentication): the effective mTLS mode of a workload comes from the oldest mesh-wide
// policy (root namespace, no selector), overridden by the oldest namespace-wide one, overridden by the oldest
// one whose selector matches the workload (outside the root namespace); UNSET inherits. Port-level modes
// override the workload's mode for their port. The node agent turns the result into at most one DENY
// Authorization per workload, named after the PeerAuthentication that decided:
//
//   - STRICT on every port: deny sources with no identity (notPrincipals ["*"]);
//   - STRICT with PERMISSIVE/DISABLE ports: deny sources with no identity unless the port is exempt;
//   - not STRICT with STRICT ports: deny sources with no identity on those ports;
//   - otherwise nothing.
//
// DISABLE means PERMISSIVE here: the node agent never refuses a peer identity.

// peerIndex answers "which PeerAuthentication-derived DENY applies to this workload".
type peerIndex struct {
	mesh       *Authorization // for namespaces without a PeerAuthentication of their own
	namespaces map[string]*namespacePeers
}

type namespacePeers struct {
	base      *Authorization // from the namespace (or mesh) level; nil when not STRICT
	workloads []workloadPeer // selector PeerAuthentications, oldest first
}

type workloadPeer struct {
	selector map[string]string
	authz    *Authorization // nil: this workload is not STRICT anywhere
}

// effective is the PeerAuthentication-derived DENY for a workload, or nil.
func (x *peerIndex) effective(namespace string, labels map[string]string) *Authorization {
	np := x.namespaces[namespace]
	if np == nil {
		return x.mesh
	}
	for i := range np.workloads {
		if selects(np.workloads[i].selector, labels) {
			return np.workloads[i].authz
		}
	}
	return np.base
}

// all lists every Authorization the index can return, for Len, Authorizations and Summary.
func (x *peerIndex) all() []*Authorization {
	var out []*Authorization
	seen := map[*Authorization]bool{}
	add := func(a *Authorization) {
		if a != nil && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	add(x.mesh)
	for _, ns := range sortedKeys(x.namespaces) {
		np := x.namespaces[ns]
		add(np.base)
		for _, w := range np.workloads {
			add(w.authz)
		}
	}
	return out
}

// modeOrigin is an effective mode and the PeerAuthentication that set it (nil: the PERMISSIVE default).
type modeOrigin struct {
	mode MTLSMode
	from *Resource
}

func (m modeOrigin) override(r *Resource, mode MTLSMode) modeOrigin {
	if mode == MTLSUnset {
		return m
	}
	return modeOrigin{mode: mode, from: r}
}

// compilePeerAuthentications builds the index from the PeerAuthentications, ordered oldest first.
// The third result names the PeerAuthentications that are ignored (shadowed by an older one, or misplaced).
func compilePeerAuthentications(pas []*Resource, rootNamespace string) (peerIndex, []Warning, map[*Resource]bool) {
	l := sortPeerAuthentications(pas, rootNamespace)
	meshMode := modeOrigin{mode: MTLSPermissive}
	if l.mesh != nil {
		meshMode = meshMode.override(l.mesh, l.mesh.PeerAuthentication.Mode)
	}
	x := peerIndex{mesh: strictEverywhere(meshMode, rootNamespace), namespaces: map[string]*namespacePeers{}}
	namespaces := map[string]bool{}
	for ns := range l.namespace {
		namespaces[ns] = true
	}
	for ns := range l.selector {
		namespaces[ns] = true
	}
	for ns := range namespaces {
		x.namespaces[ns] = l.namespacePeers(ns, meshMode, x.mesh, rootNamespace)
	}
	return x, l.warnings, l.ignored
}

// peerLevels are the PeerAuthentications by level: the mesh's (root
// namespace, no selector), each namespace's, and the workload-selecting ones;
// with those ignored (shadowed by an older one of their level, or with a
// selector in the root namespace) and why.
type peerLevels struct {
	mesh      *Resource
	namespace map[string]*Resource
	selector  map[string][]*Resource
	warnings  []Warning
	ignored   map[*Resource]bool
}

func sortPeerAuthentications(pas []*Resource, rootNamespace string) *peerLevels {
	l := &peerLevels{namespace: map[string]*Resource{}, selector: map[string][]*Resource{}, ignored: map[*Resource]bool{}}
	for _, r := range pas {
		spec := r.PeerAuthentication
		switch {
		case len(spec.Selector) > 0 && r.Namespace == rootNamespace:
			l.ignore(r, Warning{Source: r.Source, Policy: r.Key(), Field: "spec.selector",
				Msg: "a PeerAuthentication with a selector in the root namespace is ignored (as istiod does for ztunnel); move it to the workload's namespace"})
		case len(spec.Selector) > 0:
			l.selector[r.Namespace] = append(l.selector[r.Namespace], r)
		case r.Namespace == rootNamespace && l.mesh != nil:
			l.ignore(r, shadowed(r, l.mesh, "the mesh"))
		case r.Namespace == rootNamespace:
			l.mesh = r
		case l.namespace[r.Namespace] != nil:
			l.ignore(r, shadowed(r, l.namespace[r.Namespace], "namespace "+r.Namespace))
		default:
			l.namespace[r.Namespace] = r
		}
	}
	return l
}

func (l *peerLevels) ignore(r *Resource, why Warning) {
	l.ignored[r] = true
	l.warnings = append(l.warnings, why)
}

// namespacePeers is the mTLS policy of namespace ns: its own mode over the
// mesh's, and its workload-selecting policies over that.
func (l *peerLevels) namespacePeers(ns string, meshMode modeOrigin, mesh *Authorization, rootNamespace string) *namespacePeers {
	base := meshMode
	if r := l.namespace[ns]; r != nil {
		base = base.override(r, r.PeerAuthentication.Mode)
	}
	np := &namespacePeers{base: mesh}
	if base.from != meshMode.from {
		np.base = strictEverywhere(base, rootNamespace)
	}
	for _, r := range l.selector[ns] {
		authz := workloadPeerAuthz(r, base, rootNamespace)
		if authz == nil && r.PeerAuthentication.Mode == MTLSUnset {
			authz = np.base // inherits, and no port differs: the same policy as the namespace
		}
		np.workloads = append(np.workloads, workloadPeer{selector: r.PeerAuthentication.Selector, authz: authz})
	}
	return np
}

func shadowed(r, winner *Resource, level string) Warning {
	return Warning{Source: r.Source, Policy: r.Key(), Msg: fmt.Sprintf(
		"another PeerAuthentication for %s is older (%s at %s) and wins; this one is ignored", level, winner.Key(), winner.Source)}
}

// strictEverywhere is the DENY of every source without an identity, when mode is STRICT.
func strictEverywhere(m modeOrigin, rootNamespace string) *Authorization {
	if m.mode != MTLSStrict || m.from == nil {
		return nil
	}
	a := peerAuthz(m.from, rootNamespace)
	a.Rules = []Rule{{Index: 0, Clauses: []Clause{{Matches: []Match{{NotPrincipals: []StringMatch{{Type: MatchPresence}}}}}}}}
	return a
}

// workloadPeerAuthz resolves a selector PeerAuthentication against the mode its workloads inherit. It
// returns nil when the result is the inherited policy (the caller reuses that one) or nothing at all.
func workloadPeerAuthz(r *Resource, inherited modeOrigin, rootNamespace string) *Authorization {
	spec := r.PeerAuthentication
	mode := inherited.override(r, spec.Mode)
	var exceptions []uint16 // ports whose mode differs from the workload's
	for _, port := range sortedPorts(spec.PortLevelMTLS) {
		pm := spec.PortLevelMTLS[port]
		if pm == MTLSUnset || (pm == MTLSStrict) == (mode.mode == MTLSStrict) {
			continue
		}
		exceptions = append(exceptions, port)
	}
	if len(exceptions) == 0 {
		if mode.from != r {
			return nil
		}
		return strictEverywhere(mode, rootNamespace)
	}
	a := peerAuthz(r, rootNamespace)
	noIdentity := Match{NotPrincipals: []StringMatch{{Type: MatchPresence}}}
	if mode.mode == MTLSStrict {
		rule := Rule{Index: 0, Clauses: []Clause{{Matches: []Match{noIdentity}}}}
		for _, p := range exceptions {
			rule.Clauses = append(rule.Clauses, Clause{Matches: []Match{{NotDestinationPorts: []uint16{p}}}})
		}
		a.Rules = []Rule{rule}
		return a
	}
	for i, p := range exceptions {
		m := noIdentity
		m.DestinationPorts = []uint16{p}
		a.Rules = append(a.Rules, Rule{Index: i, Clauses: []Clause{{Matches: []Match{m}}}})
	}
	return a
}

func peerAuthz(r *Resource, rootNamespace string) *Authorization {
	scope := scopeOf(r.Namespace, r.PeerAuthentication.Selector, rootNamespace)
	return &Authorization{
		Name:      r.Name,
		Namespace: r.Namespace,
		Kind:      KindPeerAuthentication,
		Scope:     scope,
		Action:    ActionDeny,
		Selector:  r.PeerAuthentication.Selector,
		Source:    r.Source,
	}
}

func sortedPorts(m map[uint16]MTLSMode) []uint16 {
	out := make([]uint16, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// portLevelString is "8080=PERMISSIVE,9090=STRICT", for summaries.
func portLevelString(m map[uint16]MTLSMode) string {
	parts := make([]string, 0, len(m))
	for _, p := range sortedPorts(m) {
		parts = append(parts, fmt.Sprintf("%d=%s", p, m[p]))
	}
	return strings.Join(parts, ",")
}
