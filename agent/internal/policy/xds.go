package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Policies from istiod. istiod sends ztunnels AuthorizationPolicies and PeerAuthentications already compiled
// to the L4 form, as istio.security.Authorization resources (ztunnel proto/authorization.proto; istio
// pkg/workloadapi/security). The types below are that message in plain Go, with no protobuf dependency:
// the xDS client decodes the wire form into them, CompileXDS turns them into Authorizations, and
// (*Set).WithXDS enforces them next to the local YAML policies, with ztunnel's semantics (src/rbac.rs,
// Authorization::matches) and ztunnel's choice of policies (src/state.rs, ProxyState::assert_rbac).

// XDSAuthorization is one istio.security.Authorization. Its key, "namespace/name", is the xDS resource name
// istiod gives it and the name a Workload's authorization_policies lists.
type XDSAuthorization struct {
	Name, Namespace string
	Scope           XDSScope
	Action          XDSAction
	DryRun          bool
	Groups          []XDSGroup // any group may match (rules in ztunnel's proto)
}

// XDSGroup is one rule of the source policy: every XDSRules must hold (clauses in ztunnel's proto).
type XDSGroup struct{ Rules []XDSRules }

// XDSRules is one condition (a rule's `from`, its `to`, or one `when`): any match may hold; none given
// holds.
type XDSRules struct{ Matches []XDSMatch }

// XDSMatch is one source, operation or condition: every field given must hold (its values are OR'd), no
// value of a Not field may hold, and a match with no usable value never matches.
//
// Decoding notes, to do what ztunnel does: an Address becomes netip.PrefixFrom(address, length), and one
// that is not 4 or 16 bytes or whose length is too long is left out (CompileXDS drops invalid prefixes);
// ports are uint32 on the wire and ztunnel keeps their low 16 bits (`*p as u16`); istiod never sends more
// than 65535.
type XDSMatch struct {
	Namespaces, NotNamespaces             []XDSStringMatch
	ServiceAccounts, NotServiceAccounts   []XDSServiceAccountMatch
	Principals, NotPrincipals             []XDSStringMatch
	SourceIPs, NotSourceIPs               []netip.Prefix
	DestinationIPs, NotDestinationIPs     []netip.Prefix
	DestinationPorts, NotDestinationPorts []uint16
}

// XDSStringMatch is the proto's oneof: set exactly one of Exact, Prefix, Suffix (non-empty) or Presence.
// One with nothing set is left out, as ztunnel leaves out a StringMatch without match_type. istiod only
// sends non-empty values: "*" becomes Presence, "x*" a prefix, "*x" a suffix.
type XDSStringMatch struct {
	Exact, Prefix, Suffix string
	Presence              bool
}

// XDSServiceAccountMatch matches the peer identity's namespace and service account, whatever its trust
// domain. istiod converts the YAML `serviceAccounts` to it ("sa" meaning the policy's namespace).
type XDSServiceAccountMatch struct{ Namespace, ServiceAccount string }

// XDSScope is istio.security.Scope, with the proto's numbers: a decoder converts with XDSScope(pb.Scope).
type XDSScope int32

// Scopes of an istiod policy.
const (
	// XDSScopeGlobal applies to every workload (istiod: a root-namespace policy without a selector).
	XDSScopeGlobal XDSScope = 0
	// XDSScopeNamespace applies to every workload of the policy's namespace.
	XDSScopeNamespace XDSScope = 1
	// XDSScopeWorkloadSelector applies to the workloads whose Workload resource lists the policy in
	// authorization_policies (Conn.BoundPolicies); istiod sends no selector.
	XDSScopeWorkloadSelector XDSScope = 2
)

func (s XDSScope) String() string {
	switch s {
	case XDSScopeGlobal:
		return string(ScopeGlobal)
	case XDSScopeNamespace:
		return string(ScopeNamespace)
	case XDSScopeWorkloadSelector:
		return string(ScopeWorkloadSelector)
	}
	return "XDSScope(" + strconv.Itoa(int(s)) + ")"
}

func (s XDSScope) scope() (Scope, bool) {
	switch s {
	case XDSScopeGlobal:
		return ScopeGlobal, true
	case XDSScopeNamespace:
		return ScopeNamespace, true
	case XDSScopeWorkloadSelector:
		return ScopeWorkloadSelector, true
	}
	return "", false
}

// XDSAction is istio.security.Action, with the proto's numbers. The proto has ALLOW and DENY only; AUDIT
// is numbered as in the AuthorizationPolicy API, for a decoder that meets it.
type XDSAction int32

// Actions of an istiod policy.
const (
	XDSActionAllow XDSAction = 0
	XDSActionDeny  XDSAction = 1
	XDSActionAudit XDSAction = 2 // not an L4 action: the policy is skipped with a warning
)

func (a XDSAction) String() string {
	switch a {
	case XDSActionAllow:
		return string(ActionAllow)
	case XDSActionDeny:
		return string(ActionDeny)
	case XDSActionAudit:
		return string(ActionAudit)
	}
	return "XDSAction(" + strconv.Itoa(int(a)) + ")"
}

// Origin says which source of policy an Authorization comes from.
type Origin string

// Origins. The zero value is the agent's own policy directory.
const (
	OriginLocal  Origin = ""
	OriginIstiod Origin = "istiod"
)

// XDSSourceFile is the Source.File of istiod's policies and of their warnings, so that messages which
// print a Source say where the policy came from.
const XDSSourceFile = "istiod"

// Names istiod gives the policies it converts from PeerAuthentications (pilot/pkg/model,
// GetAmbientPolicyConfigName; serviceregistry/kube/controller/ambient, staticStrictPolicyName).
const (
	xdsPeerAuthenticationPrefix = "converted_peer_authentication_"
	xdsStaticStrictName         = "istio_converted_static_strict"
)

// CompileXDS converts istiod's policies to the package's compiled form, sorted by namespace and name, as
// (*Set).WithXDS enforces them. It never fails. What ztunnel would reject or not enforce is skipped with a
// Warning: an AUDIT or unknown action, an unknown scope. What ztunnel leaves out is left out with a Warning
// too: a string match with nothing set, an invalid prefix. Two policies with one key: the last one wins,
// as a later xDS update replaces an earlier one. The result shares the prefix and port slices of auths.
func CompileXDS(auths []XDSAuthorization) ([]Authorization, []Warning) {
	compiled, _, warnings := compileXDS(auths)
	out := make([]Authorization, len(compiled))
	for i, a := range compiled {
		out[i] = *a
	}
	return out, warnings
}

// compileXDS returns the enforced policies sorted by key, and a summary of every policy, enforced or not.
func compileXDS(auths []XDSAuthorization) ([]*Authorization, []PolicySummary, []Warning) {
	keys := make([]string, len(auths))
	last := make(map[string]int, len(auths))
	var warnings []Warning
	for i := range auths {
		keys[i] = auths[i].key()
		if _, dup := last[keys[i]]; dup {
			warnings = append(warnings, Warning{Source: Source{File: XDSSourceFile}, Policy: keys[i], Msg: "sent twice: the last one is used"})
		}
		last[keys[i]] = i
	}
	compiled := make([]*Authorization, 0, len(auths))
	summary := make([]PolicySummary, 0, len(auths))
	for i := range auths {
		if last[keys[i]] != i {
			continue
		}
		x := &auths[i]
		a, ws := x.compile(keys[i])
		warnings = append(warnings, ws...)
		if a != nil {
			compiled = append(compiled, a)
		}
		summary = append(summary, x.summarize(a, len(ws)))
	}
	slices.SortFunc(compiled, comparePolicies)
	return compiled, summary, warnings
}

func (x *XDSAuthorization) key() string { return x.Namespace + "/" + x.Name }

// kind tells istiod's converted PeerAuthentications from its AuthorizationPolicies, by the names istiod
// gives them, so a decision says which kind of resource denied.
func (x *XDSAuthorization) kind() Kind {
	if x.Name == xdsStaticStrictName || strings.HasPrefix(x.Name, xdsPeerAuthenticationPrefix) {
		return KindPeerAuthentication
	}
	return KindAuthorizationPolicy
}

// compile converts one policy (ztunnel: TryFrom<XdsRbac> for Authorization). It returns nil for a policy
// ztunnel would not enforce.
func (x *XDSAuthorization) compile(key string) (*Authorization, []Warning) {
	warn := func(field, format string, args ...any) Warning {
		return Warning{Source: Source{File: XDSSourceFile}, Policy: key, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	scope, ok := x.Scope.scope()
	if !ok {
		return nil, []Warning{warn("scope", "unknown scope %s (ztunnel rejects the policy); policy skipped", x.Scope)}
	}
	var action Action
	switch x.Action {
	case XDSActionAllow:
		action = ActionAllow
	case XDSActionDeny:
		action = ActionDeny
	case XDSActionAudit:
		return nil, []Warning{warn("action", "action AUDIT is not an L4 action (ztunnel does not enforce it either); policy skipped")}
	default:
		return nil, []Warning{warn("action", "unknown action %s (ztunnel rejects the policy); policy skipped", x.Action)}
	}
	a := &Authorization{
		Name:      x.Name,
		Namespace: x.Namespace,
		Kind:      x.kind(),
		Scope:     scope,
		Action:    action,
		DryRun:    x.DryRun,
		Source:    Source{File: XDSSourceFile},
		Origin:    OriginIstiod,
		Rules:     make([]Rule, 0, len(x.Groups)),
		key:       key,
	}
	var warnings []Warning
	for i, g := range x.Groups {
		rule := Rule{Index: i, Clauses: make([]Clause, 0, len(g.Rules))}
		for j, rs := range g.Rules {
			c := Clause{Matches: make([]Match, 0, len(rs.Matches))}
			for k := range rs.Matches {
				m, ws := compileXDSMatch(&rs.Matches[k], func(f string, format string, args ...any) Warning {
					return warn(fmt.Sprintf("groups[%d].rules[%d].matches[%d].%s", i, j, k, f), format, args...)
				})
				c.Matches = append(c.Matches, m)
				warnings = append(warnings, ws...)
			}
			rule.Clauses = append(rule.Clauses, c)
		}
		a.Rules = append(a.Rules, rule)
	}
	return a, warnings
}

type warnFunc func(field, format string, args ...any) Warning

// compileXDSMatch converts one match (ztunnel: TryFrom<&Match> for RbacMatch), leaving out the values
// ztunnel leaves out. A match left with no value never matches, as in ztunnel. The match shares the
// prefix and port slices of x.
func compileXDSMatch(x *XDSMatch, warn warnFunc) (Match, []Warning) {
	var ws []Warning
	strs := func(field string, in []XDSStringMatch) []StringMatch {
		if len(in) == 0 {
			return nil
		}
		out := make([]StringMatch, 0, len(in))
		for i, s := range in {
			m, set := s.compile()
			switch {
			case set == 0:
				ws = append(ws, warn(fmt.Sprintf("%s[%d]", field, i), "no match type set: left out, as ztunnel does"))
				continue
			case set > 1:
				ws = append(ws, warn(fmt.Sprintf("%s[%d]", field, i), "%d match types set where the proto allows one: %s used", set, m.Type))
			}
			out = append(out, m)
		}
		return out
	}
	nets := func(field string, in []netip.Prefix) []netip.Prefix {
		if !slices.ContainsFunc(in, func(p netip.Prefix) bool { return !p.IsValid() }) {
			return in
		}
		var out []netip.Prefix
		for i, p := range in {
			if !p.IsValid() {
				ws = append(ws, warn(fmt.Sprintf("%s[%d]", field, i), "invalid address or prefix length: left out, as ztunnel does"))
				continue
			}
			out = append(out, p)
		}
		return out
	}
	m := Match{
		Namespaces:          strs("namespaces", x.Namespaces),
		NotNamespaces:       strs("notNamespaces", x.NotNamespaces),
		ServiceAccounts:     serviceAccountMatches(x.ServiceAccounts),
		NotServiceAccounts:  serviceAccountMatches(x.NotServiceAccounts),
		Principals:          strs("principals", x.Principals),
		NotPrincipals:       strs("notPrincipals", x.NotPrincipals),
		SourceIPs:           nets("sourceIps", x.SourceIPs),
		NotSourceIPs:        nets("notSourceIps", x.NotSourceIPs),
		DestinationIPs:      nets("destinationIps", x.DestinationIPs),
		NotDestinationIPs:   nets("notDestinationIps", x.NotDestinationIPs),
		DestinationPorts:    x.DestinationPorts,
		NotDestinationPorts: x.NotDestinationPorts,
	}
	return m, ws
}

// compile returns the match and how many of the oneof's fields are set; with several, the first in the
// proto's order (exact, prefix, suffix, presence) is used. An empty string reads as not set: the plain
// form cannot tell them apart, and istiod never sends one.
func (s XDSStringMatch) compile() (StringMatch, int) {
	var m StringMatch
	set := 0
	use := func(t MatchType, v string) {
		if set == 0 {
			m = StringMatch{Type: t, Value: v}
		}
		set++
	}
	if s.Exact != "" {
		use(MatchExact, s.Exact)
	}
	if s.Prefix != "" {
		use(MatchPrefix, s.Prefix)
	}
	if s.Suffix != "" {
		use(MatchSuffix, s.Suffix)
	}
	if s.Presence {
		use(MatchPresence, "")
	}
	return m, set
}

func serviceAccountMatches(in []XDSServiceAccountMatch) []ServiceAccountMatch {
	if len(in) == 0 {
		return nil
	}
	out := make([]ServiceAccountMatch, len(in))
	for i, s := range in {
		out[i] = ServiceAccountMatch{Namespace: s.Namespace, ServiceAccount: s.ServiceAccount}
	}
	return out
}

func (x *XDSAuthorization) summarize(a *Authorization, warnings int) PolicySummary {
	sum := PolicySummary{
		Name:      x.Name,
		Namespace: x.Namespace,
		Kind:      x.kind(),
		Action:    Action(x.Action.String()),
		Rules:     len(x.Groups),
		DryRun:    x.DryRun,
		Warnings:  warnings,
		Source:    Source{File: XDSSourceFile},
		Origin:    OriginIstiod,
	}
	if s, ok := x.Scope.scope(); ok {
		sum.Scope = s
	}
	if a != nil {
		sum.Enforced = true
	}
	return sum
}
