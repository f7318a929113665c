package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Scope says which destination workloads an Authorization applies to, as in
// istio.security.Scope.
type Scope string

// Scopes of a compiled Authorization.
const (
	// ScopeGlobal: a policy of the root namespace without a selector; it applies to every workload.
	ScopeGlobal Scope = "GLOBAL"
	// ScopeNamespace: a policy without a selector; it applies to every workload of its namespace.
	ScopeNamespace Scope = "NAMESPACE"
	// ScopeWorkloadSelector: a policy with selector.matchLabels; it applies to the workloads whose labels
	// match, in its namespace, or in every namespace when it lives in the root namespace.
	ScopeWorkloadSelector Scope = "WORKLOAD_SELECTOR"
	// ScopeWaypoint is ours, not istio.security.Scope (ztunnels never receive such policies): a policy with
	// targetRefs, attached to a waypoint Gateway, a Service or ServiceEntry, or the istio-waypoint
	// GatewayClass. Only (*Set).EvaluateWaypoint considers it.
	ScopeWaypoint Scope = "WAYPOINT"
)

// Action is what a matching Authorization does: ALLOW or DENY. AUDIT and CUSTOM are not L4 actions and
// never reach the compiled form.
type Action string

// Actions, as in the AuthorizationPolicy YAML.
const (
	ActionAllow  Action = "ALLOW"
	ActionDeny   Action = "DENY"
	ActionAudit  Action = "AUDIT"
	ActionCustom Action = "CUSTOM"
)

// Authorization is one compiled L4 policy, the form istiod sends to ztunnels (istio.security.Authorization):
// rules -> clauses -> matches. A policy matches if any rule matches; a rule if all its clauses match; a
// clause if any of its matches matches.
type Authorization struct {
	Name       string            `json:"name"`
	Namespace  string            `json:"namespace"`
	Kind       Kind              `json:"kind"` // the resource it came from
	Scope      Scope             `json:"scope"`
	Action     Action            `json:"action"`
	Selector   map[string]string `json:"selector,omitempty"`   // matchLabels, for ScopeWorkloadSelector
	TargetRefs []TargetRef       `json:"targetRefs,omitempty"` // what a ScopeWaypoint policy attaches to
	Rules      []Rule            `json:"rules"`
	// L7Rules are a waypoint policy's rules with their L7 attributes, for requests on an HTTP port (the
	// waypoint at L7); nil when the policy has none, and Rules apply to requests as written. Rules are then
	// the L4 form, for the waypoint's other ports.
	L7Rules []Rule `json:"l7Rules,omitempty"`
	DryRun  bool   `json:"dryRun,omitempty"`
	Source  Source `json:"source"`
	Origin  Origin `json:"origin,omitempty"` // OriginIstiod for istiod's policies (WithXDS)

	// ord breaks ties deterministically: the position in Set.policies, after them for istiod's policies
	// (waypoint ones: the position in the waypoint index).
	ord int
	key string // Key(), computed once by Compile
}

// Key is "namespace/name", the name a Decision gives the policy.
func (a *Authorization) Key() string {
	if a.key != "" {
		return a.key
	}
	return a.Namespace + "/" + a.Name
}

// Rule is one compiled rule: every clause must match. Index is the rule's position in the resource's
// spec.rules (for a PeerAuthentication, in the converted form), so a Decision can point at the YAML.
type Rule struct {
	Index   int      `json:"index"`
	Clauses []Clause `json:"clauses"`
}

// Clause is one condition of a rule (the `from` list, the `to` list, or one `when` entry): any match may
// hold.
type Clause struct {
	Matches []Match `json:"matches"`
}

// Match is one source / operation / condition. Every field that is set must hold (its values are OR'd), and
// so must every Not field (none of its values may hold). A Match with no field set never matches.
type Match struct {
	set fieldMask // fields() | prepared, computed once by Compile; zero for a hand-built Match

	Namespaces          []StringMatch         `json:"namespaces,omitempty"`
	NotNamespaces       []StringMatch         `json:"notNamespaces,omitempty"`
	ServiceAccounts     []ServiceAccountMatch `json:"serviceAccounts,omitempty"`
	NotServiceAccounts  []ServiceAccountMatch `json:"notServiceAccounts,omitempty"`
	Principals          []StringMatch         `json:"principals,omitempty"`
	NotPrincipals       []StringMatch         `json:"notPrincipals,omitempty"`
	SourceIPs           []netip.Prefix        `json:"sourceIps,omitempty"`
	NotSourceIPs        []netip.Prefix        `json:"notSourceIps,omitempty"`
	DestinationIPs      []netip.Prefix        `json:"destinationIps,omitempty"`
	NotDestinationIPs   []netip.Prefix        `json:"notDestinationIps,omitempty"`
	DestinationPorts    []uint16              `json:"destinationPorts,omitempty"`
	NotDestinationPorts []uint16              `json:"notDestinationPorts,omitempty"`

	// L7 attributes, kept only in a waypoint policy's L7Rules: they match a request (Conn.Request), never a
	// connection.
	Hosts      []StringMatch `json:"hosts,omitempty"`
	NotHosts   []StringMatch `json:"notHosts,omitempty"`
	Methods    []string      `json:"methods,omitempty"`
	NotMethods []string      `json:"notMethods,omitempty"`
	Paths      []StringMatch `json:"paths,omitempty"`
	NotPaths   []StringMatch `json:"notPaths,omitempty"`
	// Headers are `when` conditions on request.headers[name].
	Headers []HeaderMatch `json:"headers,omitempty"`
	// RemoteIPs are remoteIpBlocks and remote.ip: the caller's address, as the waypoint knows it.
	RemoteIPs    []netip.Prefix `json:"remoteIps,omitempty"`
	NotRemoteIPs []netip.Prefix `json:"notRemoteIps,omitempty"`
}

// HeaderMatch is a `when` condition on a request header: some value of the header matches one of Values (if
// any) and none of NotValues.
type HeaderMatch struct {
	Name      string        `json:"name"` // canonical
	Values    []StringMatch `json:"values,omitempty"`
	NotValues []StringMatch `json:"notValues,omitempty"`
}

// IsEmpty reports whether no field is set; such a match never matches.
func (m *Match) IsEmpty() bool { return m.fields() == 0 }

// fieldMask has a bit per Match field that is set, so evaluation looks only at those.
type fieldMask uint32

const (
	hasNamespaces fieldMask = 1 << iota
	hasNotNamespaces
	hasServiceAccounts
	hasNotServiceAccounts
	hasPrincipals
	hasNotPrincipals
	hasSourceIPs
	hasNotSourceIPs
	hasDestinationIPs
	hasNotDestinationIPs
	hasDestinationPorts
	hasNotDestinationPorts
	hasL7    // any L7 attribute
	prepared // set holds the mask
)

// mask is fields(), precomputed when Compile prepared the match.
func (m *Match) mask() fieldMask {
	if m.set&prepared != 0 {
		return m.set &^ prepared
	}
	return m.fields()
}

func (m *Match) fields() fieldMask {
	var f fieldMask
	set := func(n int, bit fieldMask) {
		if n > 0 {
			f |= bit
		}
	}
	set(len(m.Namespaces), hasNamespaces)
	set(len(m.NotNamespaces), hasNotNamespaces)
	set(len(m.ServiceAccounts), hasServiceAccounts)
	set(len(m.NotServiceAccounts), hasNotServiceAccounts)
	set(len(m.Principals), hasPrincipals)
	set(len(m.NotPrincipals), hasNotPrincipals)
	set(len(m.SourceIPs), hasSourceIPs)
	set(len(m.NotSourceIPs), hasNotSourceIPs)
	set(len(m.DestinationIPs), hasDestinationIPs)
	set(len(m.NotDestinationIPs), hasNotDestinationIPs)
	set(len(m.DestinationPorts), hasDestinationPorts)
	set(len(m.NotDestinationPorts), hasNotDestinationPorts)
	set(len(m.Hosts)+len(m.NotHosts)+len(m.Methods)+len(m.NotMethods)+len(m.Paths)+len(m.NotPaths)+len(m.Headers)+
		len(m.RemoteIPs)+len(m.NotRemoteIPs), hasL7)
	return f
}

// prepare computes what evaluation precomputes; Compile calls it before the Set is shared.
func (a *Authorization) prepare() {
	for _, rules := range [][]Rule{a.Rules, a.L7Rules} {
		for i := range rules {
			for j := range rules[i].Clauses {
				c := &rules[i].Clauses[j]
				for k := range c.Matches {
					c.Matches[k].set = c.Matches[k].fields() | prepared
				}
			}
		}
	}
}

// MatchType is how a StringMatch compares.
type MatchType uint8

// String match types. In the YAML: "x" exact, "x*" prefix, "*x" suffix, "*" presence.
const (
	MatchExact MatchType = iota
	MatchPrefix
	MatchSuffix
	MatchPresence
)

func (t MatchType) String() string {
	switch t {
	case MatchExact:
		return "exact"
	case MatchPrefix:
		return "prefix"
	case MatchSuffix:
		return "suffix"
	case MatchPresence:
		return "presence"
	}
	return "MatchType(" + strconv.Itoa(int(t)) + ")"
}

// MarshalText writes the type's name, so JSON dumps read "prefix", not 1.
func (t MatchType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// StringMatch matches a principal or a namespace.
type StringMatch struct {
	Type  MatchType `json:"type"`
	Value string    `json:"value,omitempty"` // empty for presence
}

// ParseStringMatch converts an Istio value the way istiod does: "*" is presence, a leading "*" a suffix
// match, a trailing "*" a prefix match, anything else exact.
func ParseStringMatch(v string) StringMatch {
	switch {
	case v == "*":
		return StringMatch{Type: MatchPresence}
	case len(v) > 0 && v[0] == '*':
		return StringMatch{Type: MatchSuffix, Value: v[1:]}
	case len(v) > 0 && v[len(v)-1] == '*':
		return StringMatch{Type: MatchPrefix, Value: v[:len(v)-1]}
	}
	return StringMatch{Type: MatchExact, Value: v}
}

// String is the Istio spelling of the match.
func (s StringMatch) String() string {
	switch s.Type {
	case MatchPresence:
		return "*"
	case MatchSuffix:
		return "*" + s.Value
	case MatchPrefix:
		return s.Value + "*"
	}
	return s.Value
}

// ServiceAccountMatch matches a peer's (namespace, service account); the trust domain is ignored.
type ServiceAccountMatch struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
}

func (s ServiceAccountMatch) String() string { return s.Namespace + "/" + s.ServiceAccount }

func portsString(ps []uint16) string {
	b := make([]byte, 0, 8*len(ps))
	for i, p := range ps {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(p), 10)
	}
	return string(b)
}

// String renders the rule for humans: clauses joined by AND, the matches of a clause by OR, e.g.
// "[ports 8080 | ports 9090] AND [principals cluster.local/ns/a/sa/b]". An empty match is "{}".
func (r Rule) String() string {
	if len(r.Clauses) == 0 {
		return "always"
	}
	parts := make([]string, len(r.Clauses))
	for i, c := range r.Clauses {
		ms := make([]string, len(c.Matches))
		for j := range c.Matches {
			ms[j] = c.Matches[j].String()
		}
		parts[i] = "[" + strings.Join(ms, " | ") + "]"
	}
	return strings.Join(parts, " AND ")
}

// String renders the set fields of the match, e.g. "namespaces default,prod* notPorts 22".
func (m *Match) String() string {
	var parts []string
	add := func(name, values string) {
		if values != "" {
			parts = append(parts, name+" "+values)
		}
	}
	add("namespaces", joinStrings(m.Namespaces))
	add("notNamespaces", joinStrings(m.NotNamespaces))
	add("serviceAccounts", joinStrings(m.ServiceAccounts))
	add("notServiceAccounts", joinStrings(m.NotServiceAccounts))
	add("principals", joinStrings(m.Principals))
	add("notPrincipals", joinStrings(m.NotPrincipals))
	add("sourceIPs", joinStrings(m.SourceIPs))
	add("notSourceIPs", joinStrings(m.NotSourceIPs))
	add("destinationIPs", joinStrings(m.DestinationIPs))
	add("notDestinationIPs", joinStrings(m.NotDestinationIPs))
	add("ports", portsString(m.DestinationPorts))
	add("notPorts", portsString(m.NotDestinationPorts))
	if len(parts) == 0 {
		return "{}"
	}
	return strings.Join(parts, " ")
}

func joinStrings[T fmt.Stringer](vs []T) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.String()
	}
	return strings.Join(parts, ",")
}
