package policy

import (
	"fmt"
	"strings"
	"testing"
)

const (
	benchNamespaces      = 500
	benchPoliciesPerNS   = 20 // 4 namespace-wide + 16 selector policies
	benchSelectorsPerNS  = 16
	benchConnectionCycle = 1024
)

// benchPolicies is 10,000 AuthorizationPolicies over 500 namespaces, each with 4 namespace-wide policies
// (ALLOW and DENY, identities, IPs, ports) and 16 selector policies (app: svc-N), plus 2 GLOBAL policies
// and a mesh-wide STRICT PeerAuthentication.
func benchPolicies(namespaces int) string {
	var b strings.Builder
	doc := func(format string, args ...any) {
		fmt.Fprintf(&b, format, args...)
		b.WriteString("---\n")
	}
	for n := range namespaces {
		ns := fmt.Sprintf("ns-%d", n)
		doc("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-same-ns, namespace: %s}\n"+
			"spec:\n  rules:\n  - from: [{source: {namespaces: [%s]}}]\n  - from: [{source: {principals: [\"cluster.local/ns/gateway/sa/*\"]}}]\n", ns, ns)
		doc("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-monitoring, namespace: %s}\n"+
			"spec:\n  rules:\n  - from: [{source: {namespaces: [monitoring]}}]\n    to: [{operation: {ports: [\"15020\", \"9090\"]}}]\n", ns)
		doc("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-untrusted, namespace: %s}\n"+
			"spec:\n  action: DENY\n  rules:\n  - from: [{source: {principals: [\"cluster.local/ns/untrusted/*\"]}}]\n  - from: [{source: {ipBlocks: [192.0.2.0/24]}}]\n", ns)
		doc("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin-port, namespace: %s}\n"+
			"spec:\n  action: DENY\n  rules:\n  - to: [{operation: {ports: [\"8443\"]}}]\n    from: [{source: {notNamespaces: [%s, admin]}}]\n", ns, ns)
		for s := range benchSelectorsPerNS {
			action := "ALLOW"
			if s%4 == 3 {
				action = "DENY"
			}
			doc("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: svc-%d, namespace: %s}\n"+
				"spec:\n  selector: {matchLabels: {app: svc-%d}}\n  action: %s\n  rules:\n"+
				"  - from: [{source: {principals: [cluster.local/ns/ns-%d/sa/client-%d]}}]\n    to: [{operation: {ports: [\"8080\"]}}]\n"+
				"    when: [{key: source.ip, values: [10.0.0.0/8]}]\n",
				s, ns, s, action, (n+1)%namespaces, s)
		}
	}
	doc("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-blocked, namespace: istio-system}\n" +
		"spec:\n  action: DENY\n  rules:\n  - from: [{source: {ipBlocks: [203.0.113.0/24]}}]\n")
	doc("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-legacy, namespace: istio-system}\n" +
		"spec:\n  action: DENY\n  rules:\n  - from: [{source: {namespaces: [legacy]}}]\n")
	doc("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: mesh, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n")
	return b.String()
}

func benchSet(b *testing.B, namespaces int) *Set {
	b.Helper()
	rs, ps := Parse("bench.yaml", []byte(benchPolicies(namespaces)))
	if len(ps) > 0 {
		b.Fatalf("problems: %v", Problems(ps))
	}
	set, ws := Compile(rs, Options{})
	if len(ws) > 0 {
		b.Fatalf("warnings: %s", warningsString(ws))
	}
	if got, want := set.Len(), namespaces*benchPoliciesPerNS+3; got != want {
		b.Fatalf("compiled %d policies, want %d", got, want)
	}
	return set
}

// benchConns cycles through destinations in many namespaces and workloads, with sources that are allowed
// by a selector policy, denied by one, or fall through to the namespace-wide policies.
func benchConns(namespaces int) []Conn {
	conns := make([]Conn, benchConnectionCycle)
	for i := range conns {
		n := (i * 7) % namespaces
		s := i % benchSelectorsPerNS
		src := fmt.Sprintf("spiffe://cluster.local/ns/ns-%d/sa/client-%d", (n+1)%namespaces, s)
		if i%5 == 4 {
			src = fmt.Sprintf("spiffe://cluster.local/ns/other-%d/sa/default", i)
		}
		conns[i] = Conn{
			DestNamespace:  fmt.Sprintf("ns-%d", n),
			DestLabels:     map[string]string{"app": fmt.Sprintf("svc-%d", s), "version": "v1", "pod-template-hash": "abc123"},
			DestIP:         addr(fmt.Sprintf("10.1.%d.%d", n%250, s+1)),
			DestPort:       8080,
			SourceIdentity: id(src),
			SourceIP:       addr(fmt.Sprintf("10.2.%d.%d", i%250, i%200+1)),
		}
	}
	return conns
}

// BenchmarkEvaluate reports ns per decision against 10,000 policies, cycling over 1,024 destinations in
// 500 namespaces (so the policies a decision needs are rarely in the CPU cache).
func BenchmarkEvaluate(b *testing.B) {
	benchEvaluate(b, benchNamespaces, benchConnectionCycle)
}

// BenchmarkEvaluateOneConn is one hot destination among the 10,000 policies.
func BenchmarkEvaluateOneConn(b *testing.B) {
	benchEvaluate(b, benchNamespaces, 1)
}

// BenchmarkEvaluateSmallSet is the same traffic against 200 policies: the cost of a decision depends on
// the policies that apply to the destination, not on the size of the set.
func BenchmarkEvaluateSmallSet(b *testing.B) {
	benchEvaluate(b, 10, benchConnectionCycle)
}

func benchEvaluate(b *testing.B, namespaces, cycle int) {
	set := benchSet(b, namespaces)
	conns := benchConns(namespaces)[:cycle]
	var allowed int
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if set.Evaluate(conns[i%len(conns)]).Allow {
			allowed++
		}
	}
	if cycle > 1 && allowed == 0 {
		b.Fatal("nothing allowed: the benchmark does not exercise ALLOW matches")
	}
}

// BenchmarkEvaluateWaypoint is the waypoint's decision against the same 10,000 node policies plus 2,500
// targetRefs ones (per namespace: an ALLOW on its waypoint Gateway, a DENY on 4 of its services) and a
// GatewayClass DENY for every waypoint; two connections in three are for a service, the others for a workload.
func BenchmarkEvaluateWaypoint(b *testing.B) {
	rs, ps := Parse("bench.yaml", []byte(benchPolicies(benchNamespaces)+benchWaypointPolicies(benchNamespaces)))
	if len(ps) > 0 {
		b.Fatal(Problems(ps))
	}
	set, _ := Compile(rs, Options{})
	conns := benchConns(benchNamespaces)
	targets := make([]WaypointTarget, len(conns))
	for i, c := range conns {
		targets[i] = WaypointTarget{WaypointNamespace: c.DestNamespace, WaypointName: "waypoint"}
		if i%3 != 0 {
			targets[i].ServiceNamespace, targets[i].ServiceName = c.DestNamespace, c.DestLabels["app"]
		}
	}
	seen := map[Reason]int{}
	for i := range conns {
		seen[set.EvaluateWaypoint(conns[i], targets[i]).Reason]++
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		set.EvaluateWaypoint(conns[i%len(conns)], targets[i%len(targets)])
	}
	if seen[ReasonAllowMatched] == 0 || seen[ReasonDenyMatched] == 0 || seen[ReasonNoAllowMatched] == 0 {
		b.Fatalf("the benchmark does not exercise every outcome: %v", seen)
	}
}

func benchWaypointPolicies(namespaces int) string {
	var b strings.Builder
	for n := range namespaces {
		fmt.Fprintf(&b, "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: waypoint-allow, namespace: ns-%d}\n"+
			"spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}]\n  rules:\n"+
			"  - from: [{source: {principals: [\"cluster.local/ns/ns-%d/sa/*\"]}}]\n---\n", n, (n+1)%namespaces)
		for s := 3; s < benchSelectorsPerNS; s += 4 {
			fmt.Fprintf(&b, "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: svc-%d-deny, namespace: ns-%d}\n"+
				"spec:\n  targetRefs: [{kind: Service, name: svc-%d}]\n  action: DENY\n  rules:\n"+
				"  - from: [{source: {principals: [cluster.local/ns/ns-%d/sa/client-%d]}}]\n---\n", s, n, s, (n+1)%namespaces, s)
		}
	}
	b.WriteString("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: every-waypoint, namespace: istio-system}\n" +
		"spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: GatewayClass, name: istio-waypoint}]\n  action: DENY\n" +
		"  rules:\n  - from: [{source: {ipBlocks: [203.0.113.0/24]}}]\n")
	return b.String()
}

// BenchmarkCompile is what a reload of 10,000 policies costs, parsed YAML to indexed Set.
func BenchmarkCompile(b *testing.B) {
	rs, ps := Parse("bench.yaml", []byte(benchPolicies(benchNamespaces)))
	if len(ps) > 0 {
		b.Fatal(Problems(ps))
	}
	b.ReportAllocs()
	for b.Loop() {
		Compile(rs, Options{})
	}
}

// The benchmark's connections cover every outcome, so the number means something.
func TestBenchmarkCoversOutcomes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 10,000 policies")
	}
	rs, ps := Parse("bench.yaml", []byte(benchPolicies(benchNamespaces)))
	if len(ps) > 0 {
		t.Fatal(Problems(ps))
	}
	set, _ := Compile(rs, Options{})
	seen := map[Reason]int{}
	for _, c := range benchConns(benchNamespaces) {
		seen[set.Evaluate(c).Reason]++
	}
	for _, r := range []Reason{ReasonDenyMatched, ReasonAllowMatched, ReasonNoAllowMatched} {
		if seen[r] == 0 {
			t.Errorf("no connection ends with %q: %v", r, seen)
		}
	}
}
