package policy

import (
	"net/netip"
	"testing"
)

// The three connections of spec/authz.md "Reference cases".
var (
	plaintextConn = Conn{SourceIP: addr("127.0.0.1"), DestIP: addr("127.0.0.2"), DestPort: 8080}
	tlsConn       = Conn{SourceIdentity: id("spiffe://td/ns/namespace/sa/account"), SourceIP: addr("127.0.0.1"), DestIP: addr("127.0.0.2"), DestPort: 8080}
	tlsAltConn    = Conn{SourceIdentity: id("spiffe://td-alt/ns/ns-alt/sa/sa-alt"), SourceIP: addr("127.0.0.3"), DestIP: addr("127.0.0.4"), DestPort: 9090}
)

func policyOf(rules ...Rule) *Authorization {
	return &Authorization{Name: "p", Namespace: "namespace", Scope: ScopeGlobal, Action: ActionAllow, Rules: rules}
}

func ruleOf(clauses ...Clause) Rule { return Rule{Clauses: clauses} }

func clauseOf(matches ...Match) Clause { return Clause{Matches: matches} }

func matchesConn(a *Authorization, c Conn) bool {
	src := peerOf(c.SourceIdentity, c.SourceIP)
	_, ok := a.matches(&src, target{ip: c.DestIP, port: c.DestPort})
	return ok
}

func exact(v string) StringMatch { return StringMatch{Type: MatchExact, Value: v} }

func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// TestReferenceCases is the table of spec/authz.md, plus the negated and destination-IP twins ztunnel
// tests alongside it.
func TestReferenceCases(t *testing.T) {
	account := ServiceAccountMatch{Namespace: "namespace", ServiceAccount: "account"}
	cases := []struct {
		name                   string
		match                  Match
		plaintext, tls, tlsAlt bool
	}{
		{"namespaces", Match{Namespaces: []StringMatch{exact("namespace")}}, false, true, false},
		{"not_namespaces", Match{NotNamespaces: []StringMatch{exact("namespace")}}, true, false, true},
		{"principals", Match{Principals: []StringMatch{exact("td/ns/namespace/sa/account")}}, false, true, false},
		{"not_principals", Match{NotPrincipals: []StringMatch{exact("td/ns/namespace/sa/account")}}, true, false, true},
		{"source_ips", Match{SourceIPs: []netip.Prefix{prefix("127.0.0.1/32")}}, true, true, false},
		{"destination_ports", Match{DestinationPorts: []uint16{8080}}, true, true, false},
		{"service_accounts", Match{ServiceAccounts: []ServiceAccountMatch{account}}, false, true, false},
		{"not_service_accounts", Match{NotServiceAccounts: []ServiceAccountMatch{account}}, true, false, true},
		{"not_source_ips", Match{NotSourceIPs: []netip.Prefix{prefix("127.0.0.1/32")}}, false, false, true},
		{"destination_ips", Match{DestinationIPs: []netip.Prefix{prefix("127.0.0.2/32")}}, true, true, false},
		{"not_destination_ips", Match{NotDestinationIPs: []netip.Prefix{prefix("127.0.0.2/32")}}, false, false, true},
		{"destination_ips cidr", Match{DestinationIPs: []netip.Prefix{prefix("127.0.0.0/24")}}, true, true, true},
		{"not_destination_ports", Match{NotDestinationPorts: []uint16{8080}}, false, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := policyOf(ruleOf(clauseOf(tc.match)))
			for _, c := range []struct {
				name string
				conn Conn
				want bool
			}{{"plaintext", plaintextConn, tc.plaintext}, {"tls", tlsConn, tc.tls}, {"tls (other account)", tlsAltConn, tc.tlsAlt}} {
				if got := matchesConn(p, c.conn); got != c.want {
					t.Errorf("%s: matches = %v, want %v", c.name, got, c.want)
				}
			}
		})
	}
}

// TestReferenceCasesFromYAML runs the same rows end to end: Istio YAML, Compile, Evaluate. Each ALLOW
// policy allows exactly the connections its match matches.
func TestReferenceCasesFromYAML(t *testing.T) {
	cases := []struct {
		name                   string
		rule                   string
		plaintext, tls, tlsAlt bool
	}{
		{"namespaces", `from: [{source: {namespaces: [namespace]}}]`, false, true, false},
		{"notNamespaces", `from: [{source: {notNamespaces: [namespace]}}]`, true, false, true},
		{"principals", `from: [{source: {principals: [td/ns/namespace/sa/account]}}]`, false, true, false},
		{"notPrincipals", `from: [{source: {notPrincipals: [td/ns/namespace/sa/account]}}]`, true, false, true},
		{"ipBlocks", `from: [{source: {ipBlocks: [127.0.0.1/32]}}]`, true, true, false},
		{"ports", `to: [{operation: {ports: ["8080"]}}]`, true, true, false},
		{"serviceAccounts", `from: [{source: {serviceAccounts: [namespace/account]}}]`, false, true, false},
		{"notServiceAccounts", `from: [{source: {notServiceAccounts: [namespace/account]}}]`, true, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, _ := compileYAML(t, `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: istio-system}
spec:
  rules:
  - `+tc.rule+"\n")
			for _, c := range []struct {
				name string
				conn Conn
				want bool
			}{{"plaintext", plaintextConn, tc.plaintext}, {"tls", tlsConn, tc.tls}, {"tls (other account)", tlsAltConn, tc.tlsAlt}} {
				if d := set.Evaluate(c.conn); d.Allow != c.want {
					t.Errorf("%s: %v, want allow=%v", c.name, d, c.want)
				}
			}
		})
	}
}

func TestStructureEdgeCases(t *testing.T) {
	port8080 := Match{DestinationPorts: []uint16{8080}}
	port80 := Match{DestinationPorts: []uint16{80}}
	cases := []struct {
		name   string
		policy *Authorization
		want   bool // for tlsConn (port 8080)
	}{
		{"a policy with no rules never matches", policyOf(), false},
		{"a rule with no clauses matches", policyOf(ruleOf()), true},
		{"a clause with no matches matches", policyOf(ruleOf(clauseOf())), true},
		{"a match with every field empty never matches", policyOf(ruleOf(clauseOf(Match{}))), false},
		{"an empty match beside a matching one: the clause matches", policyOf(ruleOf(clauseOf(Match{}, port8080))), true},
		{"any match of a clause may hold", policyOf(ruleOf(clauseOf(port80, port8080))), true},
		{"every clause of a rule must hold", policyOf(ruleOf(clauseOf(port8080), clauseOf(port80))), false},
		{"any rule may match", policyOf(ruleOf(clauseOf(port80)), ruleOf(clauseOf(port8080))), true},
		{"a positive and a negated field must both hold",
			policyOf(ruleOf(clauseOf(Match{DestinationPorts: []uint16{8080}, NotNamespaces: []StringMatch{exact("namespace")}}))), false},
		{"values of one field are OR'd",
			policyOf(ruleOf(clauseOf(Match{Namespaces: []StringMatch{exact("a"), exact("namespace")}}))), true},
		{"every field present must hold",
			policyOf(ruleOf(clauseOf(Match{Namespaces: []StringMatch{exact("namespace")}, DestinationPorts: []uint16{80}}))), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := matchesConn(tc.policy, tlsConn); got != tc.want {
				t.Errorf("matches = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPlaintextSourceHasNoIdentity(t *testing.T) {
	presence := []StringMatch{{Type: MatchPresence}}
	sa := []ServiceAccountMatch{{Namespace: "namespace", ServiceAccount: "account"}}
	cases := []struct {
		name  string
		match Match
		want  bool
	}{
		{"principals *", Match{Principals: presence}, false},
		{"namespaces *", Match{Namespaces: presence}, false},
		{"principals prefix", Match{Principals: []StringMatch{{Type: MatchPrefix, Value: ""}}}, false},
		{"principals suffix", Match{Principals: []StringMatch{{Type: MatchSuffix, Value: ""}}}, false},
		{"serviceAccounts", Match{ServiceAccounts: sa}, false},
		{"notPrincipals *", Match{NotPrincipals: presence}, true},
		{"notNamespaces *", Match{NotNamespaces: presence}, true},
		{"notServiceAccounts", Match{NotServiceAccounts: sa}, true},
		{"source IPs still work", Match{SourceIPs: []netip.Prefix{prefix("127.0.0.0/8")}}, true},
		{"ports still work", Match{DestinationPorts: []uint16{8080}}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := matchesConn(policyOf(ruleOf(clauseOf(tc.match))), plaintextConn); got != tc.want {
				t.Errorf("matches = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestStringMatch(t *testing.T) {
	cases := []struct {
		yaml, value string
		want        bool
	}{
		{"foo", "foo", true},
		{"foo", "not", false},
		{"foo", "", false},
		{"foo*", "foobar", true},
		{"foo*", "notfoo", false},
		{"foo*", "", false},
		{"*foo", "barfoo", true},
		{"*foo", "foonot", false},
		{"*foo", "", false},
		{"*", "foo", true},
		{"*", "", false},
	}
	for _, tc := range cases {
		m := ParseStringMatch(tc.yaml)
		if got := m.matches(tc.value); got != tc.want {
			t.Errorf("%q (%s) matches %q = %v, want %v", tc.yaml, m.Type, tc.value, got, tc.want)
		}
		if m.String() != tc.yaml {
			t.Errorf("%q spells back as %q", tc.yaml, m.String())
		}
	}
}

func TestPeerOf(t *testing.T) {
	cases := []struct {
		id                string
		principal, ns, sa string
	}{
		{"spiffe://cluster.local/ns/default/sa/sleep", "cluster.local/ns/default/sa/sleep", "default", "sleep"},
		{"spiffe://example.org/workload/x", "example.org/workload/x", "", ""},
		{"spiffe://td/ns/a/sa/b/extra", "td/ns/a/sa/b/extra", "", ""},
		{"", "", "", ""},
	}
	for _, tc := range cases {
		p := peerOf(id(tc.id), addr("::ffff:10.0.0.1"))
		if p.principal != tc.principal || p.namespace != tc.ns || p.serviceAccount != tc.sa {
			t.Errorf("%q: got (%q, %q, %q)", tc.id, p.principal, p.namespace, p.serviceAccount)
		}
		if p.ip != addr("10.0.0.1") {
			t.Errorf("%q: a v4-mapped source address is compared as IPv4, got %v", tc.id, p.ip)
		}
	}
}

// A service account match ignores the trust domain; a namespace comes from the identity.
func TestServiceAccountIgnoresTrustDomain(t *testing.T) {
	p := policyOf(ruleOf(clauseOf(Match{ServiceAccounts: []ServiceAccountMatch{{Namespace: "namespace", ServiceAccount: "account"}}})))
	c := tlsConn
	c.SourceIdentity = id("spiffe://other-domain/ns/namespace/sa/account")
	if !matchesConn(p, c) {
		t.Error("service account in another trust domain did not match")
	}
}
