package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Builders for istiod's form, spelled like the proto.
func xExact(v string) XDSStringMatch  { return XDSStringMatch{Exact: v} }
func xPrefix(v string) XDSStringMatch { return XDSStringMatch{Prefix: v} }
func xSuffix(v string) XDSStringMatch { return XDSStringMatch{Suffix: v} }

var xPresence = XDSStringMatch{Presence: true}

func xGroup(rules ...XDSRules) XDSGroup   { return XDSGroup{Rules: rules} }
func xRules(matches ...XDSMatch) XDSRules { return XDSRules{Matches: matches} }

// xNets converts as istiod's stringToIP: a bare address is a host prefix.
func xNets(vs ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(vs))
	for i, v := range vs {
		if strings.Contains(v, "/") {
			out[i] = netip.MustParsePrefix(v)
		} else {
			a := netip.MustParseAddr(v)
			out[i] = netip.PrefixFrom(a, a.BitLen())
		}
	}
	return out
}

func xdsSet(t testing.TB, base *Set, auths ...XDSAuthorization) *Set {
	t.Helper()
	set, ws := base.WithXDS(auths)
	if len(ws) > 0 {
		t.Fatalf("unexpected warnings:\n%s", warningsString(ws))
	}
	return set
}

// equivalenceCases are policies written in YAML and what istiod sends ztunnels for the same YAML
// (pilot/pkg/serviceregistry/kube/controller/ambient/authorization.go, convertAuthorizationPolicy and
// handleRule: per rule one group holding the `to` matches, then the `from` matches, then one entry per
// `when`; an ALLOW rule with L7 attributes is left out, a DENY one keeps its L4 parts).
var equivalenceCases = []struct {
	name string
	yaml string
	xds  []XDSAuthorization
	// rename maps a YAML policy key to the key istiod uses for it, when they differ.
	rename map[string]string
	// ruleShift: istiod numbers groups among the rules it kept, so after a dropped ALLOW rule the rule
	// index a decision reports differs.
	ruleShift bool
}{
	{
		name: "namespace ALLOW: namespaces, principal prefix and suffix, ports, ipBlocks",
		yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-in, namespace: default}
spec:
  rules:
  - from: [{source: {namespaces: [default, "prod-*"]}}]
    to: [{operation: {ports: ["8080"]}}]
  - from: [{source: {principals: ["cluster.local/ns/other/*", "*/sa/sleep"]}}, {source: {ipBlocks: ["192.0.2.0/24"]}}]
`,
		xds: []XDSAuthorization{{Name: "web-in", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionAllow, Groups: []XDSGroup{
			xGroup(xRules(XDSMatch{DestinationPorts: []uint16{8080}}), xRules(XDSMatch{Namespaces: []XDSStringMatch{xExact("default"), xPrefix("prod-")}})),
			xGroup(xRules(XDSMatch{Principals: []XDSStringMatch{xPrefix("cluster.local/ns/other/"), xSuffix("/sa/sleep")}},
				XDSMatch{SourceIPs: xNets("192.0.2.0/24")})),
		}}},
	},
	{
		name: "namespace DENY: not fields",
		yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-ext, namespace: default}
spec:
  action: DENY
  rules:
  - from: [{source: {notNamespaces: [default, other], notIpBlocks: ["10.0.0.0/8"]}}]
    to: [{operation: {notPorts: ["9090"]}}]
  - from: [{source: {notPrincipals: ["*"]}}]
    to: [{operation: {ports: ["22"]}}]
`,
		xds: []XDSAuthorization{{Name: "deny-ext", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionDeny, Groups: []XDSGroup{
			xGroup(xRules(XDSMatch{NotDestinationPorts: []uint16{9090}}),
				xRules(XDSMatch{NotNamespaces: []XDSStringMatch{xExact("default"), xExact("other")}, NotSourceIPs: xNets("10.0.0.0/8")})),
			xGroup(xRules(XDSMatch{DestinationPorts: []uint16{22}}), xRules(XDSMatch{NotPrincipals: []XDSStringMatch{xPresence}})),
		}}},
	},
	{
		name: "GLOBAL DENY with when conditions",
		yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: global-when, namespace: istio-system}
spec:
  action: DENY
  rules:
  - when:
    - {key: source.namespace, values: [legacy]}
    - {key: destination.port, notValues: ["22"]}
  - when:
    - {key: source.principal, values: ["*-test"]}
    - {key: destination.ip, values: ["10.0.0.3", "fd00::/64"]}
  - when:
    - {key: source.ip, notValues: ["10.0.0.0/8", "2001:db8::/32"]}
    - {key: source.principal, notValues: ["*"]}
`,
		xds: []XDSAuthorization{{Name: "global-when", Namespace: "istio-system", Scope: XDSScopeGlobal, Action: XDSActionDeny, Groups: []XDSGroup{
			xGroup(xRules(XDSMatch{Namespaces: []XDSStringMatch{xExact("legacy")}}), xRules(XDSMatch{NotDestinationPorts: []uint16{22}})),
			xGroup(xRules(XDSMatch{Principals: []XDSStringMatch{xSuffix("-test")}}), xRules(XDSMatch{DestinationIPs: xNets("10.0.0.3", "fd00::/64")})),
			xGroup(xRules(XDSMatch{NotSourceIPs: xNets("10.0.0.0/8", "2001:db8::/32")}), xRules(XDSMatch{NotPrincipals: []XDSStringMatch{xPresence}})),
		}}},
	},
	{
		name: "WORKLOAD_SELECTOR: serviceAccounts, a selector in the root namespace",
		yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-sa, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {serviceAccounts: [sleep, other/client]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-monitoring-only, namespace: istio-system}
spec:
  selector: {matchLabels: {app: db}}
  action: DENY
  rules:
  - from: [{source: {notServiceAccounts: [monitoring/prom]}}]
    to: [{operation: {ports: ["9090"]}}]
`,
		xds: []XDSAuthorization{
			{Name: "web-sa", Namespace: "default", Scope: XDSScopeWorkloadSelector, Action: XDSActionAllow, Groups: []XDSGroup{
				xGroup(xRules(XDSMatch{ServiceAccounts: []XDSServiceAccountMatch{{"default", "sleep"}, {"other", "client"}}})),
			}},
			{Name: "db-monitoring-only", Namespace: "istio-system", Scope: XDSScopeWorkloadSelector, Action: XDSActionDeny, Groups: []XDSGroup{
				xGroup(xRules(XDSMatch{DestinationPorts: []uint16{9090}}), xRules(XDSMatch{NotServiceAccounts: []XDSServiceAccountMatch{{"monitoring", "prom"}}})),
			}},
		},
	},
	{
		name: "dry-run ALLOW and DENY",
		yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: dry-deny, namespace: default, annotations: {istio.io/dry-run: "true"}}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [other]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: dry-allow, namespace: default, annotations: {istio.io/dry-run: "true"}}
spec: {rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-ips, namespace: other}
spec: {rules: [{from: [{source: {ipBlocks: ["10.0.0.0/8"]}}]}]}
`,
		xds: []XDSAuthorization{
			{Name: "dry-deny", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionDeny, DryRun: true, Groups: []XDSGroup{
				xGroup(xRules(XDSMatch{Namespaces: []XDSStringMatch{xExact("other")}})),
			}},
			{Name: "dry-allow", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionAllow, DryRun: true, Groups: []XDSGroup{
				xGroup(xRules(XDSMatch{Principals: []XDSStringMatch{xExact("cluster.local/ns/default/sa/sleep")}})),
			}},
			{Name: "allow-ips", Namespace: "other", Scope: XDSScopeNamespace, Action: XDSActionAllow, Groups: []XDSGroup{
				xGroup(xRules(XDSMatch{SourceIPs: xNets("10.0.0.0/8")})),
			}},
		},
	},
	{
		name: "L7 attributes: an ALLOW rule is left out, a DENY rule keeps its L4 parts",
		yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l7-allow, namespace: default}
spec:
  rules:
  - to: [{operation: {methods: [GET]}}]
  - from: [{source: {namespaces: [other, default]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l7-deny, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {ports: ["9090"], paths: ["/admin"]}}]
  - to: [{operation: {methods: [DELETE]}}]
  - when: [{key: "request.headers[x-foo]", values: [bar]}]
`,
		xds: []XDSAuthorization{
			{Name: "l7-allow", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionAllow, Groups: []XDSGroup{
				xGroup(xRules(XDSMatch{Namespaces: []XDSStringMatch{xExact("other"), xExact("default")}})),
			}},
			{Name: "l7-deny", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionDeny, Groups: []XDSGroup{
				xGroup(xRules(XDSMatch{DestinationPorts: []uint16{9090}})),
				xGroup(xRules(XDSMatch{})),
				xGroup(xRules(XDSMatch{})),
			}},
		},
		ruleShift: true,
	},
	{
		name: "STRICT PeerAuthentication and istiod's static strict policy",
		yaml: `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-default, namespace: default}
spec: {rules: [{from: [{source: {namespaces: [default]}}]}]}
`,
		xds: []XDSAuthorization{
			{Name: "istio_converted_static_strict", Namespace: "istio-system", Scope: XDSScopeWorkloadSelector, Action: XDSActionDeny, Groups: []XDSGroup{
				xGroup(xRules(XDSMatch{NotPrincipals: []XDSStringMatch{xPresence}})),
			}},
			{Name: "allow-default", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionAllow, Groups: []XDSGroup{
				xGroup(xRules(XDSMatch{Namespaces: []XDSStringMatch{xExact("default")}})),
			}},
		},
		rename: map[string]string{"istio-system/mesh": "istio-system/istio_converted_static_strict"},
	},
	{
		name: "allow-nothing and deny-all",
		yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: other}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: default}
spec: {action: DENY, rules: [{}]}
`,
		xds: []XDSAuthorization{
			{Name: "allow-nothing", Namespace: "other", Scope: XDSScopeNamespace, Action: XDSActionAllow},
			{Name: "deny-all", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionDeny, Groups: []XDSGroup{xGroup()}},
		},
	},
	{
		name: "IPv6 and presence",
		yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: v6, namespace: default}
spec:
  rules:
  - from: [{source: {ipBlocks: ["2001:db8::/32"], principals: ["*"]}}]
  - from: [{source: {namespaces: ["*"], notNamespaces: [legacy]}}]
    to: [{operation: {ports: ["8080", "9090"]}}]
`,
		xds: []XDSAuthorization{{Name: "v6", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionAllow, Groups: []XDSGroup{
			xGroup(xRules(XDSMatch{SourceIPs: xNets("2001:db8::/32"), Principals: []XDSStringMatch{xPresence}})),
			xGroup(xRules(XDSMatch{DestinationPorts: []uint16{8080, 9090}}),
				xRules(XDSMatch{Namespaces: []XDSStringMatch{xPresence}, NotNamespaces: []XDSStringMatch{xExact("legacy")}})),
		}}},
	},
}

// connGrid is every combination of a few sources, source addresses, destinations and ports.
func connGrid() []Conn {
	sources := []string{"", sleep, "spiffe://cluster.local/ns/other/sa/client", "spiffe://cluster.local/ns/prod-a/sa/x-test",
		"spiffe://td-alt/ns/default/sa/sleep", "spiffe://cluster.local/ns/legacy/sa/default",
		"spiffe://cluster.local/ns/monitoring/sa/prom", "spiffe://example.org/workload/x"}
	sourceIPs := []string{"10.0.0.1", "192.0.2.7", "2001:db8::5", ""}
	dests := []struct {
		namespace string
		labels    map[string]string
		ip        string
	}{
		{"default", map[string]string{"app": "web"}, "10.0.0.2"},
		{"default", map[string]string{"app": "db"}, "10.0.0.3"},
		{"other", map[string]string{"app": "web"}, "10.1.0.2"},
		{"istio-system", nil, "fd00::2"},
	}
	var conns []Conn
	for _, src := range sources {
		for _, sip := range sourceIPs {
			for _, d := range dests {
				for _, port := range []uint16{8080, 9090, 22} {
					conns = append(conns, Conn{DestNamespace: d.namespace, DestLabels: d.labels, DestIP: addr(d.ip),
						DestPort: port, SourceIdentity: id(src), SourceIP: addr(sip)})
				}
			}
		}
	}
	return conns
}

// bindLikeIstiod is what istiod puts in a Workload's authorization_policies: the selector policies that
// select it and the policy derived from its effective PeerAuthentication.
func bindLikeIstiod(local *Set, c Conn, rename map[string]string) []string {
	var keys []string
	for _, a := range local.Applicable(c) {
		if a.Scope == ScopeWorkloadSelector || a.Kind == KindPeerAuthentication {
			keys = append(keys, renamed(a.Key(), rename))
		}
	}
	return keys
}

func renamed(key string, rename map[string]string) string {
	if k, ok := rename[key]; ok {
		return k
	}
	return key
}

func sameOutcome(local, fromIstiod Outcome, rename map[string]string, ruleShift bool) bool {
	if ruleShift {
		local.Rule, fromIstiod.Rule = 0, 0
	}
	local.Policy = renamed(local.Policy, rename)
	return local == fromIstiod
}

// The YAML compiled by Compile and what istiod sends for it decide every connection the same way.
func TestXDSEquivalentToYAML(t *testing.T) {
	for _, tc := range equivalenceCases {
		t.Run(tc.name, func(t *testing.T) {
			local, _ := compileYAML(t, tc.yaml)
			istiod := xdsSet(t, nil, tc.xds...)
			if local.Len() != istiod.Len() {
				t.Fatalf("%d local policies, %d from istiod", local.Len(), istiod.Len())
			}
			seen := map[bool]int{}
			for _, c := range connGrid() {
				want := local.Evaluate(c)
				xc := c
				xc.DestLabels = nil // istiod's policies never look at labels
				xc.BoundPolicies = bindLikeIstiod(local, c, tc.rename)
				got := istiod.Evaluate(xc)
				seen[want.Allow]++
				if !sameOutcome(want.Outcome, got.Outcome, tc.rename, tc.ruleShift) {
					t.Errorf("%s (bound %v):\n  yaml:   %s\n  istiod: %s", connString(c), xc.BoundPolicies, want, got)
					continue
				}
				if (want.DryRun == nil) != (got.DryRun == nil) ||
					want.DryRun != nil && !sameOutcome(*want.DryRun, *got.DryRun, tc.rename, tc.ruleShift) {
					t.Errorf("%s: dry-run differs:\n  yaml:   %s\n  istiod: %s", connString(c), want, got)
				}
			}
			if seen[true] == 0 || seen[false] == 0 {
				t.Errorf("the grid does not exercise both verdicts: %v", seen)
			}
		})
	}
}

// ztunnel's own reference cases (src/rbac.rs tests: rbac_test! and string_match), through the Set.
func TestXDSZtunnelReferenceCases(t *testing.T) {
	plaintext := Conn{SourceIP: addr("127.0.0.1"), DestIP: addr("127.0.0.2"), DestPort: 8080, DestNamespace: "namespace"}
	tls := plaintext
	tls.SourceIdentity = id("spiffe://td/ns/namespace/sa/account")
	alt := Conn{SourceIdentity: id("spiffe://td-alt/ns/ns-alt/sa/sa-alt"), SourceIP: addr("127.0.0.3"),
		DestIP: addr("127.0.0.4"), DestPort: 9090, DestNamespace: "namespace"}
	ns := []XDSStringMatch{xExact("namespace")}
	sa := []XDSServiceAccountMatch{{"namespace", "account"}}
	principal := []XDSStringMatch{xExact("td/ns/namespace/sa/account")}
	cases := []struct {
		name                 string
		match                XDSMatch
		plaintext, tls, tAlt bool
	}{
		{"namespaces", XDSMatch{Namespaces: ns}, false, true, false},
		{"not_namespaces", XDSMatch{NotNamespaces: ns}, true, false, true},
		{"service_accounts", XDSMatch{ServiceAccounts: sa}, false, true, false},
		{"not_service_accounts", XDSMatch{NotServiceAccounts: sa}, true, false, true},
		{"principals", XDSMatch{Principals: principal}, false, true, false},
		{"not_principals", XDSMatch{NotPrincipals: principal}, true, false, true},
		{"source_ips", XDSMatch{SourceIPs: xNets("127.0.0.1/32")}, true, true, false},
		{"not_source_ips", XDSMatch{NotSourceIPs: xNets("127.0.0.1/32")}, false, false, true},
		{"destination_ips", XDSMatch{DestinationIPs: xNets("127.0.0.2/32")}, true, true, false},
		{"not_destination_ips", XDSMatch{NotDestinationIPs: xNets("127.0.0.2/32")}, false, false, true},
		{"cidr_range", XDSMatch{DestinationIPs: []netip.Prefix{netip.PrefixFrom(addr("127.0.0.1"), 24)}}, true, true, true},
		{"destination_ports", XDSMatch{DestinationPorts: []uint16{8080}}, true, true, false},
		{"not_destination_ports", XDSMatch{NotDestinationPorts: []uint16{8080}}, false, false, true},
		{"presence principal", XDSMatch{Principals: []XDSStringMatch{xPresence}}, false, true, true},
		{"not presence principal", XDSMatch{NotPrincipals: []XDSStringMatch{xPresence}}, true, false, false},
		{"presence namespace", XDSMatch{Namespaces: []XDSStringMatch{xPresence}}, false, true, true},
		{"principal prefix: no spiffe://", XDSMatch{Principals: []XDSStringMatch{xPrefix("td/")}}, false, true, false},
		{"principal prefix with spiffe:// never matches", XDSMatch{Principals: []XDSStringMatch{xPrefix("spiffe://")}}, false, false, false},
		{"principal suffix", XDSMatch{Principals: []XDSStringMatch{xSuffix("/sa/sa-alt")}}, false, false, true},
		{"namespace prefix", XDSMatch{Namespaces: []XDSStringMatch{xPrefix("ns-")}}, false, false, true},
		{"namespace suffix", XDSMatch{Namespaces: []XDSStringMatch{xSuffix("space")}}, false, true, false},
		{"fields AND", XDSMatch{Namespaces: ns, DestinationPorts: []uint16{9090}}, false, false, false},
		{"values OR", XDSMatch{Namespaces: []XDSStringMatch{xExact("namespace"), xExact("ns-alt")}}, false, true, true},
		{"positive and negative", XDSMatch{DestinationIPs: xNets("127.0.0.0/8"), NotSourceIPs: xNets("127.0.0.3")}, true, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set := xdsSet(t, nil, XDSAuthorization{Name: tc.name, Namespace: "istio-system", Scope: XDSScopeGlobal,
				Groups: []XDSGroup{xGroup(xRules(tc.match))}})
			for _, c := range []struct {
				name string
				conn Conn
				want bool
			}{{"plaintext", plaintext, tc.plaintext}, {"tls", tls, tc.tls}, {"tls_alt", alt, tc.tAlt}} {
				// The policy is the only ALLOW: the connection is allowed iff it matches.
				if got := set.Evaluate(c.conn).Allow; got != c.want {
					t.Errorf("%s: matches = %v, want %v", c.name, got, c.want)
				}
			}
		})
	}
}

// ztunnel's string_match cases, on the peer's namespace ("" is a plaintext peer).
func TestXDSStringMatch(t *testing.T) {
	cases := []struct {
		match XDSStringMatch
		ns    string
		want  bool
	}{
		{xExact("foo"), "foo", true}, {xExact("foo"), "not", false}, {xExact("foo"), "", false},
		{xPrefix("foo"), "foobar", true}, {xPrefix("foo"), "notfoo", false}, {xPrefix("foo"), "", false},
		{xSuffix("foo"), "barfoo", true}, {xSuffix("foo"), "foonot", false}, {xSuffix("foo"), "", false},
		{xPresence, "foo", true}, {xPresence, "", false},
	}
	for _, tc := range cases {
		set := xdsSet(t, nil, XDSAuthorization{Name: "m", Namespace: "istio-system", Scope: XDSScopeGlobal,
			Groups: []XDSGroup{xGroup(xRules(XDSMatch{Namespaces: []XDSStringMatch{tc.match}}))}})
		source := ""
		if tc.ns != "" {
			source = "spiffe://cluster.local/ns/" + tc.ns + "/sa/default"
		}
		if got := set.Evaluate(conn(source, "10.0.0.1")).Allow; got != tc.want {
			t.Errorf("%+v on namespace %q: %v, want %v", tc.match, tc.ns, got, tc.want)
		}
	}
}

// ztunnel's rbac_empty_policy: an empty match never matches, a condition without matches and a group
// without conditions always do, a policy without groups never does.
func TestXDSEmptyParts(t *testing.T) {
	cases := []struct {
		name   string
		groups []XDSGroup
		want   bool
		warns  int
	}{
		{"empty match", []XDSGroup{xGroup(xRules(XDSMatch{}))}, false, 0},
		{"condition without matches", []XDSGroup{xGroup(xRules())}, true, 0},
		{"group without conditions", []XDSGroup{xGroup()}, true, 0},
		{"no groups", nil, false, 0},
		{"a match whose every value is left out", []XDSGroup{xGroup(xRules(XDSMatch{
			Principals: []XDSStringMatch{{}}, SourceIPs: []netip.Prefix{{}, netip.PrefixFrom(addr("10.0.0.1"), 33)}}))}, false, 3},
		{"a not field whose every value is left out does not hold back the match", []XDSGroup{xGroup(xRules(XDSMatch{
			NotPrincipals: []XDSStringMatch{{}}, DestinationPorts: []uint16{8080}}))}, true, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, ws := (*Set)(nil).WithXDS([]XDSAuthorization{{Name: "p", Namespace: "default", Scope: XDSScopeNamespace, Groups: tc.groups}})
			if len(ws) != tc.warns {
				t.Errorf("%d warnings, want %d:\n%s", len(ws), tc.warns, warningsString(ws))
			}
			for _, source := range []string{"", sleep} {
				d := set.Evaluate(conn(source, "10.0.0.1"))
				if d.Allow != tc.want {
					t.Errorf("source %q: %s, want allow=%v", source, d, tc.want)
				}
			}
		})
	}
}

func TestXDSScopesAndBinding(t *testing.T) {
	allowSleep := []XDSGroup{xGroup(xRules(XDSMatch{Principals: []XDSStringMatch{xExact("cluster.local/ns/default/sa/sleep")}}))}
	set := xdsSet(t, nil,
		XDSAuthorization{Name: "web", Namespace: "default", Scope: XDSScopeWorkloadSelector, Groups: allowSleep},
		XDSAuthorization{Name: "ns-wide", Namespace: "other", Scope: XDSScopeNamespace, Groups: allowSleep},
		XDSAuthorization{Name: "everywhere", Namespace: "istio-system", Scope: XDSScopeGlobal, Action: XDSActionDeny,
			Groups: []XDSGroup{xGroup(xRules(XDSMatch{SourceIPs: xNets("203.0.113.0/24")}))}},
	)
	to := func(namespace string, bound ...string) Conn {
		c := conn(sleep, "10.0.0.1")
		c.DestNamespace, c.BoundPolicies = namespace, bound
		return c
	}
	cases := []struct {
		name string
		conn Conn
		want []string // keys of the applicable policies, in order
	}{
		{"not bound: only GLOBAL", to("default"), []string{"istio-system/everywhere"}},
		{"bound", to("default", "default/web"), []string{"default/web", "istio-system/everywhere"}},
		{"bound by key, whatever the labels", func() Conn { c := to("default", "default/web"); c.DestLabels = nil; return c }(),
			[]string{"default/web", "istio-system/everywhere"}},
		{"bound twice, unknown keys", to("default", "default/web", "nope/x", "default/web", ""), []string{"default/web", "istio-system/everywhere"}},
		{"NAMESPACE applies in its namespace", to("other"), []string{"istio-system/everywhere", "other/ns-wide"}},
		{"NAMESPACE and GLOBAL bound too are listed once", to("other", "other/ns-wide", "istio-system/everywhere"),
			[]string{"istio-system/everywhere", "other/ns-wide"}},
		{"a bound policy of another namespace applies, as in ztunnel", to("third", "default/web"),
			[]string{"default/web", "istio-system/everywhere"}},
		{"a bound NAMESPACE policy of another namespace applies, as in ztunnel", to("third", "other/ns-wide"),
			[]string{"istio-system/everywhere", "other/ns-wide"}},
	}
	for _, tc := range cases {
		var got []string
		for _, a := range set.Applicable(tc.conn) {
			got = append(got, a.Key())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: applicable %v, want %v", tc.name, got, tc.want)
		}
	}
	if d := set.Evaluate(to("default")); !d.Allow || d.Reason != ReasonNoAllowPolicy {
		t.Errorf("not bound: %s", d)
	}
	other := to("default", "default/web")
	other.SourceIdentity = id("spiffe://cluster.local/ns/x/sa/y")
	if d := set.Evaluate(other); d.Allow || d.Reason != ReasonNoAllowMatched {
		t.Errorf("bound, not matched: %s", d)
	}
	blocked := to("default", "default/web")
	blocked.SourceIP = addr("203.0.113.9")
	if d := set.Evaluate(blocked); d.Allow || d.Policy != "istio-system/everywhere" {
		t.Errorf("GLOBAL DENY: %s", d)
	}
}

// Local selector policies keep selecting by labels; istiod's bind by key, even under the same key.
func TestXDSLocalSelectorsUnchanged(t *testing.T) {
	local, _ := compileYAML(t, selectorPolicy("web", "default", "app: web"))
	set := xdsSet(t, local, XDSAuthorization{Name: "web", Namespace: "default", Scope: XDSScopeWorkloadSelector, Action: XDSActionDeny,
		Groups: []XDSGroup{xGroup()}})
	web := conn(sleep, "10.0.0.1")
	if d := set.Evaluate(web); d.Allow || d.Reason != ReasonNoAllowMatched {
		t.Errorf("labels select the local policy, nothing binds istiod's: %s", d)
	}
	db := conn(sleep, "10.0.0.1")
	db.DestLabels = map[string]string{"app": "db"}
	db.BoundPolicies = []string{"default/web"}
	if d := set.Evaluate(db); d.Allow || d.Reason != ReasonDenyMatched || d.Kind != KindAuthorizationPolicy {
		t.Errorf("the key binds istiod's policy, the labels do not select the local one: %s", d)
	}
	if got := set.Applicable(db); len(got) != 1 || got[0].Origin != OriginIstiod {
		t.Errorf("applicable: %+v", got)
	}
}

func TestXDSNextToLocalPolicies(t *testing.T) {
	allowSleepYAML := allowFrom("allow-sleep", "default", "principals: [cluster.local/ns/default/sa/sleep]")
	denySleepYAML := denyFrom("deny-sleep", "default", "principals: [cluster.local/ns/default/sa/sleep]")
	sleepMatch := []XDSGroup{xGroup(xRules(XDSMatch{Principals: []XDSStringMatch{xExact("cluster.local/ns/default/sa/sleep")}}))}
	otherMatch := []XDSGroup{xGroup(xRules(XDSMatch{Namespaces: []XDSStringMatch{xExact("other")}}))}
	cases := []struct {
		name string
		yaml string
		xds  XDSAuthorization
		want Outcome
	}{
		{
			name: "istiod's DENY wins over a local ALLOW",
			yaml: allowSleepYAML,
			xds:  XDSAuthorization{Name: "x-deny", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionDeny, Groups: sleepMatch},
			want: Outcome{Reason: ReasonDenyMatched, Policy: "default/x-deny", Kind: KindAuthorizationPolicy, Rule: 0},
		},
		{
			name: "a local DENY wins over istiod's ALLOW",
			yaml: denySleepYAML,
			xds:  XDSAuthorization{Name: "x-allow", Namespace: "default", Scope: XDSScopeNamespace, Groups: sleepMatch},
			want: Outcome{Reason: ReasonDenyMatched, Policy: "default/deny-sleep", Kind: KindAuthorizationPolicy, Rule: 0},
		},
		{
			name: "both DENY: the local one is reported",
			yaml: denySleepYAML,
			xds:  XDSAuthorization{Name: "a-first-by-name", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionDeny, Groups: sleepMatch},
			want: Outcome{Reason: ReasonDenyMatched, Policy: "default/deny-sleep", Kind: KindAuthorizationPolicy, Rule: 0},
		},
		{
			name: "istiod's ALLOW makes ALLOW policies apply",
			yaml: denyFrom("deny-other", "default", "namespaces: [other]"),
			xds:  XDSAuthorization{Name: "x-allow", Namespace: "default", Scope: XDSScopeNamespace, Groups: otherMatch},
			want: Outcome{Reason: ReasonNoAllowMatched, Rule: -1},
		},
		{
			name: "either source's ALLOW allows",
			yaml: allowFrom("allow-other", "default", "namespaces: [other]"),
			xds:  XDSAuthorization{Name: "x-allow", Namespace: "default", Scope: XDSScopeNamespace, Groups: sleepMatch},
			want: Outcome{Allow: true, Reason: ReasonAllowMatched, Policy: "default/x-allow", Kind: KindAuthorizationPolicy, Rule: 0},
		},
		{
			name: "istiod's static strict DENY is reported as a PeerAuthentication",
			yaml: allowSleepYAML,
			xds: XDSAuthorization{Name: "istio_converted_static_strict", Namespace: "istio-system", Scope: XDSScopeGlobal, Action: XDSActionDeny,
				Groups: []XDSGroup{xGroup(xRules(XDSMatch{NotPrincipals: []XDSStringMatch{xPresence}}))}},
			want: Outcome{Reason: ReasonDenyMatched, Policy: "istio-system/istio_converted_static_strict", Kind: KindPeerAuthentication, Rule: 0},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			local, _ := compileYAML(t, tc.yaml)
			set := xdsSet(t, local, tc.xds)
			source := sleep
			if tc.xds.Name == "istio_converted_static_strict" {
				source = ""
			}
			if got := set.Evaluate(conn(source, "10.0.0.1")); got.Outcome != tc.want || got.DryRun != nil {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestXDSDryRun(t *testing.T) {
	local, _ := compileYAML(t, allowFrom("allow-sleep", "default", "principals: [cluster.local/ns/default/sa/sleep]"))
	set := xdsSet(t, local, XDSAuthorization{Name: "dry-deny", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionDeny, DryRun: true,
		Groups: []XDSGroup{xGroup(xRules(XDSMatch{SourceIPs: xNets("10.0.0.0/8")}))}})
	d := set.Evaluate(conn(sleep, "10.0.0.1"))
	want := Outcome{Allow: true, Reason: ReasonAllowMatched, Policy: "default/allow-sleep", Kind: KindAuthorizationPolicy, Rule: 0}
	wantDry := Outcome{Reason: ReasonDenyMatched, Policy: "default/dry-deny", Kind: KindAuthorizationPolicy, Rule: 0}
	if d.Outcome != want || d.DryRun == nil || *d.DryRun != wantDry {
		t.Errorf("got %s, want %s; dry-run: %s", d, want, wantDry)
	}
}

func TestXDSSkippedAndDuplicates(t *testing.T) {
	groups := []XDSGroup{xGroup()}
	set, ws := (*Set)(nil).WithXDS([]XDSAuthorization{
		{Name: "audit", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionAudit, Groups: groups},
		{Name: "custom", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSAction(3), Groups: groups},
		{Name: "scope", Namespace: "default", Scope: XDSScope(7), Action: XDSActionDeny, Groups: groups},
		{Name: "twice", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionDeny, Groups: groups},
		{Name: "twice", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionAllow, Groups: groups},
		{Name: "strings", Namespace: "default", Scope: XDSScopeNamespace, Groups: []XDSGroup{xGroup(xRules(XDSMatch{
			Principals: []XDSStringMatch{{Exact: "a", Prefix: "b"}, {}}}))}},
	})
	wantWarnings := []string{
		"istiod: default/twice: sent twice: the last one is used",
		"istiod: default/audit: action: action AUDIT is not an L4 action (ztunnel does not enforce it either); policy skipped",
		"istiod: default/custom: action: unknown action XDSAction(3) (ztunnel rejects the policy); policy skipped",
		"istiod: default/scope: scope: unknown scope XDSScope(7) (ztunnel rejects the policy); policy skipped",
		"istiod: default/strings: groups[0].rules[0].matches[0].principals[0]: 2 match types set where the proto allows one: exact used",
		"istiod: default/strings: groups[0].rules[0].matches[0].principals[1]: no match type set: left out, as ztunnel does",
	}
	var got []string
	for _, w := range ws {
		got = append(got, w.String())
	}
	if !slices.Equal(got, wantWarnings) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantWarnings, "\n"))
	}
	if set.Len() != 2 {
		t.Errorf("Len %d, want 2 (twice, strings)", set.Len())
	}
	// The last "twice" (ALLOW, matches everything) is the one used; "strings" allows "a" exactly.
	if d := set.Evaluate(conn(sleep, "10.0.0.1")); !d.Allow || d.Policy != "default/twice" {
		t.Errorf("%s", d)
	}
	enforced := map[string]bool{}
	for _, s := range set.Summary() {
		enforced[s.Name] = s.Enforced
		if s.Origin != OriginIstiod || s.Source != (Source{File: XDSSourceFile}) {
			t.Errorf("%s: origin %q, source %v", s.Name, s.Origin, s.Source)
		}
	}
	want := map[string]bool{"audit": false, "custom": false, "scope": false, "twice": true, "strings": true}
	if fmt.Sprint(enforced) != fmt.Sprint(want) {
		t.Errorf("summary enforced %v, want %v", enforced, want)
	}
}

func TestXDSSummaryAndSnapshots(t *testing.T) {
	local, _ := compileYAML(t, allowFrom("web", "default", "namespaces: [default]")+"---\n"+pa("mesh", "istio-system", "", "STRICT", ""))
	before := local.Summary()
	auths := []XDSAuthorization{
		{Name: "web", Namespace: "default", Scope: XDSScopeWorkloadSelector, Action: XDSActionDeny, DryRun: true, Groups: []XDSGroup{xGroup(), xGroup()}},
		{Name: "istio_converted_static_strict", Namespace: "istio-system", Scope: XDSScopeWorkloadSelector, Action: XDSActionDeny},
		{Name: "a", Namespace: "default", Scope: XDSScopeNamespace},
	}
	set := xdsSet(t, local, auths...)

	var rows []string
	for _, s := range set.Summary() {
		rows = append(rows, fmt.Sprintf("%s/%s %s %s %s rules=%d dry=%v enforced=%v origin=%q", s.Namespace, s.Name, s.Kind, s.Scope,
			s.Action, s.Rules, s.DryRun, s.Enforced, s.Origin))
	}
	want := []string{
		`default/a AuthorizationPolicy NAMESPACE ALLOW rules=0 dry=false enforced=true origin="istiod"`,
		`default/web AuthorizationPolicy NAMESPACE ALLOW rules=1 dry=false enforced=true origin=""`,
		`default/web AuthorizationPolicy WORKLOAD_SELECTOR DENY rules=2 dry=true enforced=true origin="istiod"`,
		`istio-system/istio_converted_static_strict PeerAuthentication WORKLOAD_SELECTOR DENY rules=0 dry=false enforced=true origin="istiod"`,
		`istio-system/mesh PeerAuthentication GLOBAL  rules=0 dry=false enforced=true origin=""`,
	}
	if !slices.Equal(rows, want) {
		t.Errorf("summary:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
	if set.Len() != local.Len()+3 || len(set.Authorizations()) != set.Len() {
		t.Errorf("Len %d (local %d), Authorizations %d", set.Len(), local.Len(), len(set.Authorizations()))
	}
	as := set.Authorizations()
	if last := as[len(as)-1]; last.Origin != OriginIstiod || last.Source.String() != "istiod" {
		t.Errorf("istiod's policies come after the local ones: %+v", last)
	}

	// Snapshots: the local set is unchanged, a second WithXDS replaces istiod's policies, and an empty
	// update removes them.
	if !slices.EqualFunc(local.Summary(), before, func(a, b PolicySummary) bool { return fmt.Sprint(a) == fmt.Sprint(b) }) || local.Len() != 2 {
		t.Errorf("WithXDS changed the Set it was called on: %v", local.Summary())
	}
	web := conn(sleep, "10.0.0.1")
	web.BoundPolicies = []string{"default/web"}
	if d := local.Evaluate(web); d.DryRun != nil {
		t.Errorf("the local set sees istiod's policies: %s", d)
	}
	again := xdsSet(t, set, auths[2])
	if again.Len() != local.Len()+1 || len(again.Summary()) != len(before)+1 {
		t.Errorf("a second WithXDS adds instead of replacing: Len %d, %d summaries", again.Len(), len(again.Summary()))
	}
	if none := xdsSet(t, set); none.Len() != local.Len() || len(none.Summary()) != len(before) {
		t.Errorf("an empty update keeps istiod's policies: Len %d", none.Len())
	}
	if set.Len() != local.Len()+3 {
		t.Errorf("later WithXDS calls changed an earlier snapshot: Len %d", set.Len())
	}
}

// Nothing about a nil Set, nil slices or zero values panics, and they allow.
func TestXDSNilAndZero(t *testing.T) {
	var nilSet *Set
	for _, auths := range [][]XDSAuthorization{nil, {}, {{}}, {{Groups: []XDSGroup{{}, {Rules: []XDSRules{{}, {Matches: []XDSMatch{{}}}}}}}}} {
		set, _ := nilSet.WithXDS(auths)
		for _, c := range []Conn{{}, {BoundPolicies: []string{"/", ""}}, conn("", ""), conn(sleep, "10.0.0.1")} {
			_ = set.Evaluate(c).String()
			_ = set.Applicable(c)
			_ = set.EvaluateWaypoint(c, WaypointTarget{})
		}
		_, _ = set.Summary(), set.Authorizations()
		if set.RootNamespace() != DefaultRootNamespace {
			t.Errorf("root namespace %q", set.RootNamespace())
		}
	}
	if as, ws := CompileXDS(nil); len(as) != 0 || len(ws) != 0 {
		t.Errorf("CompileXDS(nil): %v %v", as, ws)
	}
	// A zero XDSAuthorization is a GLOBAL ALLOW with no group: it applies everywhere and allows nothing.
	set, _ := nilSet.WithXDS([]XDSAuthorization{{}})
	if d := set.Evaluate(conn(sleep, "10.0.0.1")); d.Allow || d.Reason != ReasonNoAllowMatched {
		t.Errorf("zero policy: %s", d)
	}
}

func TestCompileXDS(t *testing.T) {
	as, ws := CompileXDS([]XDSAuthorization{
		{Name: "b", Namespace: "ns", Scope: XDSScopeWorkloadSelector, Action: XDSActionDeny, DryRun: true, Groups: []XDSGroup{
			xGroup(xRules(XDSMatch{DestinationPorts: []uint16{8080}}), xRules(XDSMatch{Principals: []XDSStringMatch{xSuffix("/sa/x"), xPresence}})),
		}},
		{Name: "a", Namespace: "ns"},
		{Name: "converted_peer_authentication_p", Namespace: "ns", Scope: XDSScopeWorkloadSelector, Action: XDSActionDeny},
	})
	if len(ws) != 0 {
		t.Fatal(warningsString(ws))
	}
	var got []string
	for _, a := range as {
		got = append(got, fmt.Sprintf("%s %s %s %s dry=%v origin=%s source=%s", a.Key(), a.Kind, a.Scope, a.Action, a.DryRun, a.Origin, a.Source))
		for _, r := range a.Rules {
			got = append(got, fmt.Sprintf("  rule %d: %s", r.Index, r))
		}
	}
	want := []string{
		"ns/a AuthorizationPolicy GLOBAL ALLOW dry=false origin=istiod source=istiod",
		"ns/b AuthorizationPolicy WORKLOAD_SELECTOR DENY dry=true origin=istiod source=istiod",
		"  rule 0: [ports 8080] AND [principals */sa/x,*]",
		"ns/converted_peer_authentication_p PeerAuthentication WORKLOAD_SELECTOR DENY dry=false origin=istiod source=istiod",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// WithXDS only reads the Set it is called on: evaluations of it and of earlier snapshots go on meanwhile
// (run with -race).
func TestXDSConcurrentSnapshots(t *testing.T) {
	local, _ := compileYAML(t, benchPolicies(3))
	auths := benchXDSPolicies(3)
	conns := benchXDSConns(3)
	first := xdsSet(t, local, auths...)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				c := conns[(g*200+i)%len(conns)]
				if g%2 == 0 {
					next, _ := local.WithXDS(auths[i%len(auths):])
					_ = next.Evaluate(c)
				}
				_, _ = local.Evaluate(c), first.Evaluate(c)
			}
		})
	}
	wg.Wait()
}
