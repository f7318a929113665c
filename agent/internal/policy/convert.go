package policy

import (
	"fmt"
	"net/netip"
	"net/textproto"
	"strings"
)

// convertAuthorizationPolicy compiles one AuthorizationPolicy into the L4 form, as istiod does for ztunnel
// (pilot/pkg/serviceregistry/kube/controller/ambient, convertAuthorizationPolicy). A policy with
// targetRef/targetRefs compiles the same way, with ScopeWaypoint, and its L7 rules apart (L7Rules): it is for
// the waypoint role. It returns nil for a policy with action AUDIT or CUSTOM, which the node agent does not
// enforce; at a waypoint an AUDIT policy compiles (it marks requests, EvaluateWaypoint). Each such
// decision, each L7 attribute dropped and each target that attaches to nothing is a warning.
func convertAuthorizationPolicy(r *Resource, rootNamespace string) (*Authorization, []Warning) {
	spec := r.AuthorizationPolicy
	warn := func(field, format string, args ...any) Warning {
		return Warning{Source: r.Source, Policy: r.Key(), Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	atWaypoint := len(spec.TargetRefs) > 0
	l7Hint := "enforce L7 rules with a waypoint"
	if atWaypoint {
		l7Hint = "the agent's waypoint enforces them per request on HTTP service ports (app_protocol http, http2, grpc); this is what its other ports do"
	}
	action := spec.Action
	var warnings []Warning
	switch {
	case spec.Action == ActionAudit && atWaypoint:
		// Compiled: it decides nothing; the waypoint marks the requests it matches in its access log.
	case spec.Action == ActionCustom && atWaypoint:
		// Refused, failing closed: what it would send to the external authorizer is denied, as istiod makes Envoy
		// deny when a CUSTOM policy's provider cannot be used.
		action = ActionDeny
		warnings = append(warnings, warn("spec.action", "CUSTOM (external authorization by %q) is not supported by the agent's waypoint, "+
			"which has no external authorizer: the requests its rules match are denied (403)", spec.Provider))
	case spec.Action != ActionAllow && spec.Action != ActionDeny && atWaypoint:
		return nil, []Warning{warn("spec.action", "action %s is not supported at the agent's waypoint; policy skipped", spec.Action)}
	case spec.Action != ActionAllow && spec.Action != ActionDeny:
		return nil, []Warning{warn("spec.action", "action %s is not an L4 action (ztunnel does not enforce it either); policy skipped", spec.Action)}
	}
	a := &Authorization{
		Name:      r.Name,
		Namespace: r.Namespace,
		Kind:      KindAuthorizationPolicy,
		Scope:     scopeOf(r.Namespace, spec.Selector, rootNamespace),
		Action:    action,
		Selector:  spec.Selector,
		DryRun:    r.DryRun(),
		Source:    r.Source,
		Rules:     []Rule{},
	}
	if atWaypoint {
		a.Scope, a.TargetRefs = ScopeWaypoint, spec.TargetRefs
		warnings = append(warnings, warn("spec.targetRefs", "applies to a waypoint (%s): enforced by the waypoint, not by the node agent", targetRefsString(spec.TargetRefs)))
		warnings = append(warnings, attachWarnings(r, rootNamespace, warn)...)
	}
	withL7 := false
	for i, rs := range spec.Rules {
		rule, l7 := convertRule(i, rs, r.Namespace)
		withL7 = withL7 || len(l7) > 0
		field := fmt.Sprintf("spec.rules[%d]", i)
		switch {
		case len(l7) == 0:
			a.Rules = append(a.Rules, rule)
		case a.Action == ActionAudit:
			// Marks requests only (L7Rules): on a connection it marks nothing, so nothing is narrowed.
		case a.Action == ActionAllow:
			warnings = append(warnings, warn(field, "uses L7 attributes (%s): in an ALLOW policy the whole rule is dropped and can no longer allow anything; %s", strings.Join(l7, ", "), l7Hint))
		case ruleCanMatch(rule):
			a.Rules = append(a.Rules, rule)
			warnings = append(warnings, warn(field, "uses L7 attributes (%s): in a DENY policy they are removed, so the rule denies more than written; %s", strings.Join(l7, ", "), l7Hint))
		default:
			a.Rules = append(a.Rules, rule)
			warnings = append(warnings, warn(field, "uses L7 attributes (%s): in a DENY policy they are removed, which leaves a condition that cannot match, so the rule never denies; %s", strings.Join(l7, ", "), l7Hint))
		}
	}
	if atWaypoint && withL7 {
		a.L7Rules = make([]Rule, 0, len(spec.Rules))
		for i, rs := range spec.Rules {
			a.L7Rules = append(a.L7Rules, convertRuleL7(i, rs, r.Namespace))
			if absent := absentAtWaypoint(rs); len(absent) > 0 {
				warnings = append(warnings, warn(fmt.Sprintf("spec.rules[%d]", i), "the agent's waypoint has no JWT, SNI or Envoy metadata: %s never hold (their negations always do)",
					strings.Join(absent, ", ")))
			}
		}
	}
	if a.Action == ActionAllow && len(spec.Rules) > 0 && len(a.Rules) == 0 {
		warnings = append(warnings, warn("spec.rules", "every rule was dropped: this ALLOW policy still applies but allows nothing"))
	}
	return a, warnings
}

// convertRuleL7 is convertRule with the L7 attributes kept, for the waypoint's requests. What the agent cannot
// know of a request (a JWT's principals and claims) is absent, as on a request without a token: a condition
// on it never holds, its negation always does.
func convertRuleL7(index int, rs RuleSpec, namespace string) Rule {
	rule, _ := convertRule(index, rs, namespace)
	ci := 0
	if len(rs.To) > 0 {
		c := &rule.Clauses[ci]
		for i, op := range rs.To {
			m := &c.Matches[i]
			m.Hosts, m.NotHosts = stringMatches(op.Hosts), stringMatches(op.NotHosts)
			m.Methods, m.NotMethods = op.Methods, op.NotMethods
			m.Paths, m.NotPaths = stringMatches(op.Paths), stringMatches(op.NotPaths)
		}
		ci++
	}
	if len(rs.From) > 0 {
		c := &rule.Clauses[ci]
		for i, src := range rs.From {
			m := &c.Matches[i]
			// The remote IP is the client's address as the waypoint knows it: the caller's.
			m.RemoteIPs, m.NotRemoteIPs = prefixes(src.RemoteIPBlocks), prefixes(src.NotRemoteIPBlocks)
			if len(src.RequestPrincipals) > 0 || len(src.NotRequestPrincipals) > 0 {
				m.Headers = append(m.Headers, HeaderMatch{Name: absentAttribute,
					Values: stringMatches(src.RequestPrincipals), NotValues: stringMatches(src.NotRequestPrincipals)})
			}
		}
		ci++
	}
	for i, cond := range rs.When {
		m := &rule.Clauses[ci+i].Matches[0]
		switch name, ok := requestHeader(cond.Key); {
		case ok:
			m.Headers = []HeaderMatch{{Name: name, Values: stringMatches(cond.Values), NotValues: stringMatches(cond.NotValues)}}
		case cond.Key == "remote.ip":
			m.RemoteIPs, m.NotRemoteIPs = prefixes(cond.Values), prefixes(cond.NotValues)
		case strings.HasPrefix(cond.Key, "request.auth."), cond.Key == "connection.sni", strings.HasPrefix(cond.Key, "experimental."):
			m.Headers = []HeaderMatch{{Name: absentAttribute, Values: stringMatches(cond.Values), NotValues: stringMatches(cond.NotValues)}}
		}
	}
	return rule
}

// absentAtWaypoint names the conditions of rs on what the waypoint never has (absentAttribute).
func absentAtWaypoint(rs RuleSpec) []string {
	var out []string
	for i, src := range rs.From {
		out = append(out, present(fmt.Sprintf("from[%d].source", i), []namedValues{{"requestPrincipals", src.RequestPrincipals},
			{"notRequestPrincipals", src.NotRequestPrincipals}})...)
	}
	for i, cond := range rs.When {
		if strings.HasPrefix(cond.Key, "request.auth.") || cond.Key == "connection.sni" || strings.HasPrefix(cond.Key, "experimental.") {
			out = append(out, fmt.Sprintf("when[%d] %s", i, cond.Key))
		}
	}
	return out
}

// absentAttribute stands for request attributes the agent never has (a JWT's): no request has this header.
const absentAttribute = ":absent"

// requestHeader reads a `when` key request.headers[name]: the header's canonical name.
func requestHeader(key string) (string, bool) {
	name, ok := strings.CutPrefix(key, "request.headers[")
	if !ok || !strings.HasSuffix(name, "]") || len(name) < 2 {
		return "", false
	}
	return textproto.CanonicalMIMEHeaderKey(strings.TrimSuffix(name, "]")), true
}

// scopeOf: a selector makes a WORKLOAD_SELECTOR policy; otherwise the root namespace makes it GLOBAL.
func scopeOf(namespace string, selector map[string]string, rootNamespace string) Scope {
	switch {
	case len(selector) > 0:
		return ScopeWorkloadSelector
	case namespace == rootNamespace:
		return ScopeGlobal
	}
	return ScopeNamespace
}

// convertRule turns one YAML rule into clauses: one for all `to` operations, one for all `from` sources,
// one per `when` condition. L7 attributes are left out and named in the second result.
func convertRule(index int, rs RuleSpec, namespace string) (Rule, []string) {
	rule := Rule{Index: index, Clauses: []Clause{}}
	var l7 []string
	if len(rs.To) > 0 {
		c := Clause{Matches: make([]Match, 0, len(rs.To))}
		for i, op := range rs.To {
			l7 = append(l7, operationL7(fmt.Sprintf("to[%d].operation", i), op)...)
			c.Matches = append(c.Matches, Match{
				DestinationPorts:    ports(op.Ports),
				NotDestinationPorts: ports(op.NotPorts),
			})
		}
		rule.Clauses = append(rule.Clauses, c)
	}
	if len(rs.From) > 0 {
		c := Clause{Matches: make([]Match, 0, len(rs.From))}
		for i, src := range rs.From {
			l7 = append(l7, sourceL7(fmt.Sprintf("from[%d].source", i), src)...)
			c.Matches = append(c.Matches, Match{
				Namespaces:         stringMatches(src.Namespaces),
				NotNamespaces:      stringMatches(src.NotNamespaces),
				ServiceAccounts:    serviceAccounts(src.ServiceAccounts, namespace),
				NotServiceAccounts: serviceAccounts(src.NotServiceAccounts, namespace),
				Principals:         stringMatches(src.Principals),
				NotPrincipals:      stringMatches(src.NotPrincipals),
				SourceIPs:          prefixes(src.IPBlocks),
				NotSourceIPs:       prefixes(src.NotIPBlocks),
			})
		}
		rule.Clauses = append(rule.Clauses, c)
	}
	for i, cond := range rs.When {
		if !isL4Attribute(cond.Key) {
			l7 = append(l7, fmt.Sprintf("when[%d] %s", i, cond.Key))
		}
		rule.Clauses = append(rule.Clauses, Clause{Matches: []Match{conditionMatch(cond)}})
	}
	return rule, l7
}

// conditionMatch converts one `when` entry; an L7 key gives an empty match, which never matches.
func conditionMatch(c ConditionSpec) Match {
	var m Match
	switch c.Key {
	case "source.ip":
		m.SourceIPs, m.NotSourceIPs = prefixes(c.Values), prefixes(c.NotValues)
	case "source.namespace":
		m.Namespaces, m.NotNamespaces = stringMatches(c.Values), stringMatches(c.NotValues)
	case "source.principal":
		m.Principals, m.NotPrincipals = stringMatches(c.Values), stringMatches(c.NotValues)
	case "destination.ip":
		m.DestinationIPs, m.NotDestinationIPs = prefixes(c.Values), prefixes(c.NotValues)
	case "destination.port":
		m.DestinationPorts, m.NotDestinationPorts = ports(c.Values), ports(c.NotValues)
	}
	return m
}

func operationL7(prefix string, op OperationSpec) []string {
	return present(prefix, []namedValues{{"hosts", op.Hosts}, {"notHosts", op.NotHosts}, {"methods", op.Methods},
		{"notMethods", op.NotMethods}, {"paths", op.Paths}, {"notPaths", op.NotPaths}})
}

func sourceL7(prefix string, s SourceSpec) []string {
	return present(prefix, []namedValues{{"requestPrincipals", s.RequestPrincipals}, {"notRequestPrincipals", s.NotRequestPrincipals},
		{"remoteIpBlocks", s.RemoteIPBlocks}, {"notRemoteIpBlocks", s.NotRemoteIPBlocks}})
}

func present(prefix string, fields []namedValues) []string {
	var out []string
	for _, f := range fields {
		if len(f.values) > 0 {
			out = append(out, prefix+"."+f.name)
		}
	}
	return out
}

// ruleCanMatch is false when a clause has matches and all of them are empty.
func ruleCanMatch(r Rule) bool {
	for _, c := range r.Clauses {
		if len(c.Matches) == 0 {
			continue
		}
		usable := false
		for i := range c.Matches {
			if !c.Matches[i].IsEmpty() {
				usable = true
				break
			}
		}
		if !usable {
			return false
		}
	}
	return true
}

// The converters below see only values Parse has validated; anything else is skipped, as istiod does.

func stringMatches(vs []string) []StringMatch {
	if len(vs) == 0 {
		return nil
	}
	out := make([]StringMatch, 0, len(vs))
	for _, v := range vs {
		out = append(out, ParseStringMatch(v))
	}
	return out
}

func serviceAccounts(vs []string, namespace string) []ServiceAccountMatch {
	var out []ServiceAccountMatch
	for _, v := range vs {
		if sa, err := parseServiceAccount(v, namespace); err == nil {
			out = append(out, sa)
		}
	}
	return out
}

func prefixes(vs []string) []netip.Prefix {
	var out []netip.Prefix
	for _, v := range vs {
		if p, err := parseIPBlock(v); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func ports(vs []string) []uint16 {
	var out []uint16
	for _, v := range vs {
		if p, err := parsePort(v); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func targetRefsString(refs []TargetRef) string {
	parts := make([]string, len(refs))
	for i, r := range refs {
		parts[i] = r.Kind + " " + r.Name
		if r.Namespace != "" {
			parts[i] = r.Kind + " " + r.Namespace + "/" + r.Name
		}
	}
	return strings.Join(parts, ", ")
}
