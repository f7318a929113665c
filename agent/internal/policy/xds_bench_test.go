package policy

import (
	"fmt"
	"testing"
)

// benchXDSPolicies is what istiod would send ztunnels for benchPolicies: the same 10,000 policies, the
// selector ones as WORKLOAD_SELECTOR bound by key, and the mesh-wide STRICT PeerAuthentication as istiod's
// static strict policy.
func benchXDSPolicies(namespaces int) []XDSAuthorization {
	ns := func(n int) string { return fmt.Sprintf("ns-%d", n) }
	exacts := func(vs ...string) []XDSStringMatch {
		out := make([]XDSStringMatch, len(vs))
		for i, v := range vs {
			out[i] = xExact(v)
		}
		return out
	}
	var auths []XDSAuthorization
	for n := range namespaces {
		auths = append(auths,
			XDSAuthorization{Name: "allow-same-ns", Namespace: ns(n), Scope: XDSScopeNamespace, Groups: []XDSGroup{
				xGroup(xRules(XDSMatch{Namespaces: exacts(ns(n))})),
				xGroup(xRules(XDSMatch{Principals: []XDSStringMatch{xPrefix("cluster.local/ns/gateway/sa/")}})),
			}},
			XDSAuthorization{Name: "allow-monitoring", Namespace: ns(n), Scope: XDSScopeNamespace, Groups: []XDSGroup{
				xGroup(xRules(XDSMatch{DestinationPorts: []uint16{15020, 9090}}), xRules(XDSMatch{Namespaces: exacts("monitoring")})),
			}},
			XDSAuthorization{Name: "deny-untrusted", Namespace: ns(n), Scope: XDSScopeNamespace, Action: XDSActionDeny, Groups: []XDSGroup{
				xGroup(xRules(XDSMatch{Principals: []XDSStringMatch{xPrefix("cluster.local/ns/untrusted/")}})),
				xGroup(xRules(XDSMatch{SourceIPs: xNets("192.0.2.0/24")})),
			}},
			XDSAuthorization{Name: "deny-admin-port", Namespace: ns(n), Scope: XDSScopeNamespace, Action: XDSActionDeny, Groups: []XDSGroup{
				xGroup(xRules(XDSMatch{DestinationPorts: []uint16{8443}}), xRules(XDSMatch{NotNamespaces: exacts(ns(n), "admin")})),
			}},
		)
		for s := range benchSelectorsPerNS {
			action := XDSActionAllow
			if s%4 == 3 {
				action = XDSActionDeny
			}
			auths = append(auths, XDSAuthorization{Name: fmt.Sprintf("svc-%d", s), Namespace: ns(n), Scope: XDSScopeWorkloadSelector,
				Action: action, Groups: []XDSGroup{xGroup(
					xRules(XDSMatch{DestinationPorts: []uint16{8080}}),
					xRules(XDSMatch{Principals: exacts(fmt.Sprintf("cluster.local/ns/ns-%d/sa/client-%d", (n+1)%namespaces, s))}),
					xRules(XDSMatch{SourceIPs: xNets("10.0.0.0/8")}),
				)}})
		}
	}
	return append(auths,
		XDSAuthorization{Name: "deny-blocked", Namespace: "istio-system", Scope: XDSScopeGlobal, Action: XDSActionDeny,
			Groups: []XDSGroup{xGroup(xRules(XDSMatch{SourceIPs: xNets("203.0.113.0/24")}))}},
		XDSAuthorization{Name: "deny-legacy", Namespace: "istio-system", Scope: XDSScopeGlobal, Action: XDSActionDeny,
			Groups: []XDSGroup{xGroup(xRules(XDSMatch{Namespaces: exacts("legacy")}))}},
		XDSAuthorization{Name: "istio_converted_static_strict", Namespace: "istio-system", Scope: XDSScopeWorkloadSelector, Action: XDSActionDeny,
			Groups: []XDSGroup{xGroup(xRules(XDSMatch{NotPrincipals: []XDSStringMatch{xPresence}}))}},
	)
}

// benchXDSConns are benchConns with the keys istiod binds to each destination: its selector policy and
// the static strict policy.
func benchXDSConns(namespaces int) []Conn {
	conns := benchConns(namespaces)
	for i := range conns {
		c := &conns[i]
		c.BoundPolicies = []string{c.DestNamespace + "/" + c.DestLabels["app"], "istio-system/istio_converted_static_strict"}
	}
	return conns
}

func benchXDSSet(tb testing.TB, base *Set, namespaces int) *Set {
	tb.Helper()
	set, ws := base.WithXDS(benchXDSPolicies(namespaces))
	if len(ws) > 0 {
		tb.Fatalf("warnings: %s", warningsString(ws))
	}
	return set
}

// BenchmarkEvaluateSources compares, in one run, a decision over the 10,000 policies as local YAML, as
// sent by istiod, and both at once (20,000 policies, each connection considered by both).
func BenchmarkEvaluateSources(b *testing.B) {
	local := benchSet(b, benchNamespaces)
	run := func(set *Set, conns []Conn) func(*testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				set.Evaluate(conns[i%len(conns)])
			}
		}
	}
	b.Run("yaml", run(local, benchConns(benchNamespaces)))
	b.Run("istiod", run(benchXDSSet(b, nil, benchNamespaces), benchXDSConns(benchNamespaces)))
	b.Run("yaml+istiod", run(benchXDSSet(b, local, benchNamespaces), benchXDSConns(benchNamespaces)))
}

// BenchmarkWithXDS is what an update from istiod costs: 10,000 policies compiled and indexed next to
// 10,000 local ones.
func BenchmarkWithXDS(b *testing.B) {
	local := benchSet(b, benchNamespaces)
	auths := benchXDSPolicies(benchNamespaces)
	b.ReportAllocs()
	for b.Loop() {
		local.WithXDS(auths)
	}
}

// The benchmark's two forms decide every connection the same way and cover every outcome (over 50
// namespaces: the structure is the benchmark's, the size does not matter here).
func TestBenchXDSEquivalent(t *testing.T) {
	const namespaces = 50
	local, _ := compileYAML(t, benchPolicies(namespaces))
	istiod := benchXDSSet(t, nil, namespaces)
	if local.Len() != istiod.Len() {
		t.Fatalf("%d local policies, %d from istiod", local.Len(), istiod.Len())
	}
	rename := map[string]string{"istio-system/mesh": "istio-system/istio_converted_static_strict"}
	conns, xconns := benchConns(namespaces), benchXDSConns(namespaces)
	seen := map[Reason]int{}
	for i := range conns {
		want, got := local.Evaluate(conns[i]), istiod.Evaluate(xconns[i])
		seen[got.Reason]++
		if !sameOutcome(want.Outcome, got.Outcome, rename, false) {
			t.Fatalf("%s:\n  yaml:   %s\n  istiod: %s", connString(conns[i]), want, got)
		}
	}
	for _, r := range []Reason{ReasonDenyMatched, ReasonAllowMatched, ReasonNoAllowMatched} {
		if seen[r] == 0 {
			t.Errorf("no connection ends with %q: %v", r, seen)
		}
	}
}

// Evaluate stays free of allocations with istiod's policies and bound keys.
func TestXDSEvaluateAllocations(t *testing.T) {
	local, _ := compileYAML(t, allowFrom("allow", "default", "namespaces: [default]"))
	set := benchXDSSet(t, local, 10)
	c := benchXDSConns(10)[3]
	if n := testing.AllocsPerRun(100, func() { set.Evaluate(c) }); n != 0 {
		t.Errorf("Evaluate allocates %.0f times", n)
	}
}
