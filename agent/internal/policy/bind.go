package policy

import (
	"cmp"
	"slices"
)

// istiod's policies in a Set. They are indexed apart from the local ones, so that a new batch from istiod
// replaces the old one without compiling the local YAML again, and they apply as ztunnel applies them
// (src/state.rs, ProxyState::assert_rbac): GLOBAL ones to every workload, NAMESPACE ones to the workloads
// of their namespace, and any other one to the workloads whose Workload resource names it in
// authorization_policies (Conn.BoundPolicies). istiod sends no selectors: it resolves them itself.

// xdsIndex holds istiod's compiled policies.
type xdsIndex struct {
	policies   []*Authorization            // by (namespace, name); ord continues after the local policies
	global     []*Authorization            // ScopeGlobal
	namespaces map[string][]*Authorization // ScopeNamespace, by namespace
	byKey      map[string]*Authorization   // every policy by "namespace/name", for Conn.BoundPolicies
	summary    []PolicySummary             // every policy received, enforced or skipped
}

// WithXDS returns a new Set that enforces the local policies of s and auths, the policies istiod sent,
// replacing any istiod policies s had. s itself does not change and stays usable, so the agent can keep
// the Set it compiled from its YAML and call WithXDS on it for every update from istiod (and, after a
// reload of the YAML, on the new one with istiod's latest policies). A nil s holds no local policy.
// EvaluateWaypoint never considers istiod's policies: istiod sends ztunnels none for waypoints.
//
// The Set keeps references to the slices of auths: do not modify them afterwards.
func (s *Set) WithXDS(auths []XDSAuthorization) (*Set, []Warning) {
	base := s
	if base == nil {
		base = &Set{rootNamespace: DefaultRootNamespace}
	}
	compiled, summary, warnings := compileXDS(auths)
	next := *base // shares the local policies and their indexes, which nothing modifies
	next.xds = nil
	if len(summary) == 0 {
		return &next, warnings
	}
	x := &xdsIndex{policies: compiled, summary: summary,
		namespaces: map[string][]*Authorization{}, byKey: make(map[string]*Authorization, len(compiled))}
	for i, a := range compiled {
		a.ord = len(base.policies) + i
		a.prepare()
		x.byKey[a.key] = a
		switch a.Scope {
		case ScopeGlobal:
			x.global = append(x.global, a)
		case ScopeNamespace:
			x.namespaces[a.Namespace] = append(x.namespaces[a.Namespace], a)
		}
	}
	next.xds = x
	return &next, warnings
}

// collect appends istiod's policies that apply to c's destination to out, each once.
func (x *xdsIndex) collect(c *Conn, out []*Authorization) []*Authorization {
	out = append(out, x.global...)
	out = append(out, x.namespaces[c.DestNamespace]...)
	if len(x.byKey) == 0 {
		return out
	}
	bound := len(out)
	for _, k := range c.BoundPolicies {
		a := x.byKey[k]
		if a == nil || a.Scope == ScopeGlobal || a.Scope == ScopeNamespace && a.Namespace == c.DestNamespace ||
			slices.Contains(out[bound:], a) {
			continue // unknown (not received yet, or skipped), or already there
		}
		out = append(out, a)
	}
	return out
}

// xdsLen is the number of istiod policies enforced.
func (s *Set) xdsLen() int {
	if s.xds == nil {
		return 0
	}
	return len(s.xds.policies)
}

// mergedSummary is the local summary and istiod's, by namespace, name and kind, local ones first on a tie.
func (s *Set) mergedSummary() []PolicySummary {
	if s.xds == nil {
		return slices.Clone(s.summary)
	}
	out := slices.Concat(s.summary, s.xds.summary)
	slices.SortStableFunc(out, func(a, b PolicySummary) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Kind, b.Kind),
			cmp.Compare(a.Origin, b.Origin))
	})
	return out
}
