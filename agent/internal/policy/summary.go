package policy

// PolicySummary describes one loaded resource for /config_dump and `authz` output.
type PolicySummary struct {
	Name          string            `json:"name"`
	Namespace     string            `json:"namespace"`
	Kind          Kind              `json:"kind"`
	Scope         Scope             `json:"scope,omitempty"`
	Action        Action            `json:"action,omitempty"`
	Selector      map[string]string `json:"selector,omitempty"`
	Rules         int               `json:"rules"`                  // rules in the compiled form
	DroppedRules  int               `json:"droppedRules,omitempty"` // ALLOW rules dropped for their L7 attributes
	DryRun        bool              `json:"dryRun,omitempty"`
	Enforced      bool              `json:"enforced"` // false: skipped or shadowed; Scope WAYPOINT: at a waypoint
	TargetRefs    []TargetRef       `json:"targetRefs,omitempty"`
	MTLSMode      MTLSMode          `json:"mtlsMode,omitempty"`      // PeerAuthentication
	PortLevelMTLS string            `json:"portLevelMtls,omitempty"` // PeerAuthentication: "8080=PERMISSIVE,..."
	Warnings      int               `json:"warnings,omitempty"`
	Source        Source            `json:"source"`
	Origin        Origin            `json:"origin,omitempty"` // OriginIstiod: sent by istiod (WithXDS)
}

// Summary lists every AuthorizationPolicy and PeerAuthentication of the set, and every policy istiod sent
// (Origin "istiod", Source "istiod"; a policy skipped has Enforced false), by namespace, name and kind.
func (s *Set) Summary() []PolicySummary {
	if s == nil {
		return nil
	}
	return s.mergedSummary()
}

func summarizeAuthorizationPolicy(r *Resource, a *Authorization, ws []Warning) PolicySummary {
	spec := r.AuthorizationPolicy
	sum := PolicySummary{
		Name:       r.Name,
		Namespace:  r.Namespace,
		Kind:       r.Kind,
		Action:     spec.Action,
		Selector:   spec.Selector,
		DryRun:     r.DryRun(),
		TargetRefs: spec.TargetRefs,
		Warnings:   len(ws),
		Source:     r.Source,
	}
	if len(spec.TargetRefs) > 0 {
		// Enforced where it attaches (Set.EvaluateWaypoint), never by the node agent.
		sum.Scope = ScopeWaypoint
	}
	if a != nil {
		sum.Scope = a.Scope
		sum.Rules = len(a.Rules)
		sum.DroppedRules = len(spec.Rules) - len(a.Rules)
		sum.Enforced = true
	}
	return sum
}

func summarizePeerAuthentication(r *Resource, rootNamespace string, ignored bool, ws []Warning) PolicySummary {
	spec := r.PeerAuthentication
	sum := PolicySummary{
		Name:          r.Name,
		Namespace:     r.Namespace,
		Kind:          r.Kind,
		Scope:         scopeOf(r.Namespace, spec.Selector, rootNamespace),
		Selector:      spec.Selector,
		MTLSMode:      spec.Mode,
		PortLevelMTLS: portLevelString(spec.PortLevelMTLS),
		Enforced:      !ignored,
		Source:        r.Source,
	}
	for _, w := range ws {
		if w.Source == r.Source && w.Policy == r.Key() {
			sum.Warnings++
		}
	}
	return sum
}
