package policy

import (
	"slices"
	"strings"
	"testing"
)

// targeted is an AuthorizationPolicy attached by targetRefs (refs is the YAML flow list), with one rule.
func targeted(name, namespace, refs, action, rule string) string {
	return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: " + name + "\n  namespace: " + namespace + "\n" +
		"spec:\n  targetRefs: " + refs + "\n  action: " + action + "\n  rules:\n  - " + rule + "\n"
}

const (
	gatewayRef    = "{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}"
	waypointClass = "{group: gateway.networking.k8s.io, kind: GatewayClass, name: istio-waypoint}"
	shopX         = "spiffe://cluster.local/ns/shop/sa/x"
	shopY         = "spiffe://cluster.local/ns/shop/sa/y"
	legacyCaller  = "spiffe://cluster.local/ns/legacy/sa/old"
)

// waypointYAML mixes policies for waypoints with policies for node agents, which the waypoint ignores.
var waypointYAML = strings.Join([]string{
	targeted("gw-allow", "shop", "["+gatewayRef+"]", "ALLOW",
		"from: [{source: {principals: [cluster.local/ns/shop/sa/x, cluster.local/ns/legacy/sa/old]}}]"),
	targeted("reviews-deny", "shop", "[{kind: Service, name: reviews}]", "DENY", "from: [{source: {namespaces: [legacy]}}]"),
	targeted("ratings-deny-port", "shop", "[{group: networking.istio.io, kind: ServiceEntry, name: ratings}]", "DENY",
		"to: [{operation: {ports: [\"9090\"]}}]"),
	targeted("every-waypoint", "istio-system", "["+waypointClass+"]", "DENY", "from: [{source: {ipBlocks: [203.0.113.0/24]}}]"),
	targeted("other-gw-deny-all", "other", "["+gatewayRef+"]", "DENY", "{}"),
	// Node-agent policies: each would change the waypoint's decisions if it applied there.
	"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: selector-deny-all, namespace: shop}\n" +
		"spec:\n  selector: {matchLabels: {app: reviews}}\n  action: DENY\n  rules: [{}]\n",
	allowFrom("ns-allow-nobody", "shop", "namespaces: [nobody]"),
	allowFrom("global-allow-nobody", "istio-system", "namespaces: [nobody]"),
	pa("mesh", "istio-system", "", "STRICT", ""),
}, "---\n")

// through is a connection from source at sourceIP to 10.0.0.9:port, as a waypoint sees it.
func through(source, sourceIP string, port uint16) Conn {
	return Conn{DestNamespace: "shop", DestIP: addr("10.0.0.9"), DestPort: port, SourceIdentity: id(source), SourceIP: addr(sourceIP)}
}

func TestEvaluateWaypoint(t *testing.T) {
	set, ws := compileYAML(t, waypointYAML)
	if len(ws) != 5 { // one "applies to a waypoint" per targetRefs policy
		t.Errorf("warnings:\n%s", warningsString(ws))
	}
	shopWaypoint := WaypointTarget{WaypointNamespace: "shop", WaypointName: "waypoint"}
	toService := func(ns, name string) WaypointTarget {
		t := shopWaypoint
		t.ServiceNamespace, t.ServiceName = ns, name
		return t
	}
	allowedBy := func(key string) Outcome {
		return Outcome{Allow: true, Reason: ReasonAllowMatched, Policy: key, Kind: KindAuthorizationPolicy, Rule: 0}
	}
	deniedBy := func(key string) Outcome {
		return Outcome{Reason: ReasonDenyMatched, Policy: key, Kind: KindAuthorizationPolicy, Rule: 0}
	}
	noAllowPolicy := Outcome{Allow: true, Reason: ReasonNoAllowPolicy, Rule: -1}
	cases := []struct {
		name   string
		conn   Conn
		target WaypointTarget
		want   Outcome
	}{
		{"Gateway ALLOW: its principal is allowed", through(shopX, "10.0.0.1", 8080), shopWaypoint, allowedBy("shop/gw-allow")},
		{"Gateway ALLOW: another principal is denied", through(shopY, "10.0.0.1", 8080), shopWaypoint,
			Outcome{Reason: ReasonNoAllowMatched, Rule: -1}},
		{"Gateway ALLOW: no identity is denied", through("", "10.0.0.1", 8080), shopWaypoint, Outcome{Reason: ReasonNoAllowMatched, Rule: -1}},
		{"Gateway ALLOW: not attached to another waypoint name", through(shopY, "10.0.0.1", 8080),
			WaypointTarget{WaypointNamespace: "shop", WaypointName: "east"}, noAllowPolicy},
		{"Gateway ALLOW: also applies to a service target", through(shopX, "10.0.0.1", 8080), toService("shop", "details"), allowedBy("shop/gw-allow")},
		{"Service DENY: for that service", through(legacyCaller, "10.0.0.1", 8080), toService("shop", "reviews"), deniedBy("shop/reviews-deny")},
		{"Service DENY: not for another service", through(legacyCaller, "10.0.0.1", 8080), toService("shop", "details"), allowedBy("shop/gw-allow")},
		{"Service DENY: not for a workload target", through(legacyCaller, "10.0.0.1", 8080), shopWaypoint, allowedBy("shop/gw-allow")},
		{"Service DENY: not for the same name in another namespace", through(legacyCaller, "10.0.0.1", 8080),
			toService("other", "reviews"), allowedBy("shop/gw-allow")},
		{"ServiceEntry DENY on a port", through(shopX, "10.0.0.1", 9090), toService("shop", "ratings"), deniedBy("shop/ratings-deny-port")},
		{"ServiceEntry DENY: other ports pass", through(shopX, "10.0.0.1", 8080), toService("shop", "ratings"), allowedBy("shop/gw-allow")},
		{"GatewayClass istio-waypoint in the root namespace: this waypoint", through(shopX, "203.0.113.7", 8080), shopWaypoint,
			deniedBy("istio-system/every-waypoint")},
		{"GatewayClass istio-waypoint: any waypoint, any namespace", through(shopX, "203.0.113.7", 8080),
			WaypointTarget{WaypointNamespace: "far", WaypointName: "wp", ServiceNamespace: "far", ServiceName: "s"}, deniedBy("istio-system/every-waypoint")},
		{"Gateway reference from another namespace: not this waypoint", through(shopX, "10.0.0.1", 8080), shopWaypoint, allowedBy("shop/gw-allow")},
		{"Gateway reference of the waypoint's own namespace", through(shopX, "10.0.0.1", 8080),
			WaypointTarget{WaypointNamespace: "other", WaypointName: "waypoint"}, deniedBy("other/other-gw-deny-all")},
		{"nothing attached: allow (node policies, STRICT mTLS and all)", through("", "10.0.0.1", 8080),
			WaypointTarget{WaypointNamespace: "legacy", WaypointName: "waypoint", ServiceNamespace: "shop", ServiceName: "details"}, noAllowPolicy},
		{"zero target", Conn{}, WaypointTarget{}, noAllowPolicy},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for range 20 { // the reported policy must not depend on map order
				d := set.EvaluateWaypoint(tc.conn, tc.target)
				if d.Outcome != tc.want || d.DryRun != nil {
					t.Fatalf("got  %v\nwant %v", d, tc.want)
				}
			}
		})
	}
}

// The waypoint considers targetRefs policies only; the node agent only the others, as before.
func TestWaypointAndNodePoliciesAreApart(t *testing.T) {
	set, _ := compileYAML(t, waypointYAML)
	keys := func(as []Authorization) []string {
		var out []string
		for _, a := range as {
			out = append(out, a.Key())
		}
		return out
	}
	got := keys(set.ApplicableWaypoint(WaypointTarget{WaypointNamespace: "shop", WaypointName: "waypoint", ServiceNamespace: "shop", ServiceName: "reviews"}))
	if want := []string{"istio-system/every-waypoint", "shop/gw-allow", "shop/reviews-deny"}; !slices.Equal(got, want) {
		t.Errorf("at the waypoint: %v, want %v", got, want)
	}
	reviews := Conn{DestNamespace: "shop", DestLabels: map[string]string{"app": "reviews"}, SourceIdentity: id(shopX)}
	got = keys(set.Applicable(reviews))
	if want := []string{"istio-system/global-allow-nobody", "istio-system/mesh", "shop/ns-allow-nobody", "shop/selector-deny-all"}; !slices.Equal(got, want) {
		t.Errorf("at the node: %v, want %v", got, want)
	}
	if set.Len() != 4 || len(set.Authorizations()) != 4 || len(set.WaypointPolicies()) != 5 {
		t.Errorf("Len %d, Authorizations %d, WaypointPolicies %d", set.Len(), len(set.Authorizations()), len(set.WaypointPolicies()))
	}
	// Node decisions are those of the node policies alone: other/other-gw-deny-all denies everything at
	// its waypoint, and nothing here.
	for _, tc := range []struct {
		conn Conn
		want Outcome
	}{
		{reviews, Outcome{Reason: ReasonDenyMatched, Policy: "shop/selector-deny-all", Kind: KindAuthorizationPolicy, Rule: 0}},
		{Conn{DestNamespace: "other", SourceIdentity: id(shopX)}, Outcome{Reason: ReasonNoAllowMatched, Rule: -1}},
		{Conn{DestNamespace: "other"}, Outcome{Reason: ReasonDenyMatched, Policy: "istio-system/mesh", Kind: KindPeerAuthentication, Rule: 0}},
	} {
		if d := set.Evaluate(tc.conn); d.Outcome != tc.want {
			t.Errorf("%s: got %v, want %v", connString(tc.conn), d, tc.want)
		}
	}
	for _, s := range set.Summary() {
		if atWaypoint := len(s.TargetRefs) > 0; atWaypoint != (s.Scope == ScopeWaypoint) || !s.Enforced {
			t.Errorf("summary %s/%s: scope %s, enforced %v", s.Namespace, s.Name, s.Scope, s.Enforced)
		}
	}
}

func TestWaypointAttachment(t *testing.T) {
	cases := []struct {
		name     string
		yaml     string
		target   WaypointTarget
		want     []string // ApplicableWaypoint
		warnings []string // substrings, beyond "applies to a waypoint"
	}{
		{
			name:   "one policy reached by its Gateway and its Service is considered once",
			yaml:   targeted("both", "shop", "["+gatewayRef+", {kind: Service, name: reviews}, {kind: Service, name: reviews}]", "DENY", "{}"),
			target: WaypointTarget{"shop", "waypoint", "shop", "reviews"},
			want:   []string{"shop/both"},
		},
		{
			name:   "several Services: each attaches",
			yaml:   targeted("two", "shop", "[{kind: Service, name: a}, {group: core, kind: Service, name: b}]", "DENY", "{}"),
			target: WaypointTarget{"shop", "waypoint", "shop", "b"},
			want:   []string{"shop/two"},
		},
		{
			name:   "a Service reference names no waypoint",
			yaml:   targeted("svc", "shop", "[{kind: Service, name: waypoint}]", "DENY", "{}"),
			target: WaypointTarget{"shop", "waypoint", "", ""},
		},
		{
			name:     "GatewayClass istio-waypoint outside the root namespace attaches to nothing",
			yaml:     targeted("class", "shop", "["+waypointClass+"]", "DENY", "{}"),
			target:   WaypointTarget{"shop", "waypoint", "shop", "reviews"},
			warnings: []string{"GatewayClass istio-waypoint applies only from the root namespace (istio-system)"},
		},
		{
			name:     "another GatewayClass attaches to nothing",
			yaml:     targeted("class", "istio-system", "[{group: gateway.networking.k8s.io, kind: GatewayClass, name: istio}]", "DENY", "{}"),
			target:   WaypointTarget{"istio-system", "waypoint", "", ""},
			warnings: []string{"GatewayClass istio is not istio-waypoint"},
		},
		{
			name:   "a root-namespace Gateway reference is an ordinary one",
			yaml:   targeted("root-gw", "istio-system", "["+gatewayRef+"]", "DENY", "{}"),
			target: WaypointTarget{"shop", "waypoint", "", ""},
		},
		{
			name:     "CUSTOM at the waypoint fails closed: a DENY of its rules",
			yaml:     strings.Replace(targeted("ext", "shop", "["+gatewayRef+"]", "CUSTOM", "{}"), "  rules:", "  provider: {name: opa}\n  rules:", 1),
			target:   WaypointTarget{"shop", "waypoint", "", ""},
			want:     []string{"shop/ext"},
			warnings: []string{`CUSTOM (external authorization by "opa") is not supported by the agent's waypoint`},
		},
		{
			name:   "AUDIT attaches at the waypoint (it decides nothing, EvaluateWaypoint names it)",
			yaml:   targeted("audit", "shop", "["+gatewayRef+"]", "AUDIT", "{}"),
			target: WaypointTarget{"shop", "waypoint", "", ""},
			want:   []string{"shop/audit"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, ws := compileYAML(t, tc.yaml)
			var got []string
			for _, a := range set.ApplicableWaypoint(tc.target) {
				got = append(got, a.Key())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("applicable = %v, want %v", got, tc.want)
			}
			var rest []Warning
			for _, w := range ws {
				if !strings.Contains(w.Msg, "applies to a waypoint") {
					rest = append(rest, w)
				}
			}
			if len(rest) != len(tc.warnings) {
				t.Fatalf("warnings:\n%s", warningsString(ws))
			}
			for i, w := range rest {
				if !strings.Contains(w.Msg, tc.warnings[i]) {
					t.Errorf("warning %d: %s, want %q", i, w, tc.warnings[i])
				}
			}
		})
	}
}

// L7 attributes at the waypoint: on a connection (a port that is not HTTP) they are handled as the node-agent
// conversion handles them; on a request (an HTTP port, Conn.Request set) they are matched, as Envoy's waypoint
// does.
func TestWaypointL7Rules(t *testing.T) {
	wp := WaypointTarget{WaypointNamespace: "shop", WaypointName: "waypoint"}
	allowed := Outcome{Allow: true, Reason: ReasonNoAllowPolicy, Rule: -1}
	cases := []struct {
		name     string
		yaml     string
		conn     Conn
		want     Outcome
		warnings int
		requests map[*Request]bool // allowed?
	}{
		{
			name:     "an ALLOW rule with methods is dropped on a connection; on requests it allows GET only",
			warnings: 3, // and "every rule was dropped"
			yaml:     targeted("get", "shop", "["+gatewayRef+"]", "ALLOW", "to: [{operation: {methods: [GET], paths: [/api/*]}}]"),
			conn:     through(shopX, "10.0.0.1", 8080),
			want:     Outcome{Reason: ReasonNoAllowMatched, Rule: -1},
			requests: map[*Request]bool{req("GET", "/api/x", "h"): true, req("POST", "/api/x", "h"): false, req("GET", "/other", "h"): false},
		},
		{
			name:     "a DENY rule with ports and paths denies the whole port on a connection, /admin on requests",
			yaml:     targeted("admin", "shop", "["+gatewayRef+"]", "DENY", "to: [{operation: {ports: [\"8080\"], paths: [/admin, \"/secret*\"]}}]"),
			conn:     through(shopX, "10.0.0.1", 8080),
			want:     Outcome{Reason: ReasonDenyMatched, Policy: "shop/admin", Kind: KindAuthorizationPolicy, Rule: 0},
			warnings: 2,
			requests: map[*Request]bool{req("GET", "/admin", "h"): false, req("GET", "/secret/x", "h"): false, req("GET", "/", "h"): true,
				req("GET", "/admin/x", "h"): true},
		},
		{
			name:     "a DENY rule with only a header condition never denies a connection, denies bob's requests",
			yaml:     targeted("hdr", "shop", "["+gatewayRef+"]", "DENY", "when: [{key: \"request.headers[x-user]\", values: [bob]}]"),
			conn:     through(shopX, "10.0.0.1", 8080),
			want:     allowed,
			warnings: 2,
			requests: map[*Request]bool{req("GET", "/", "h", "X-User", "bob"): false, req("GET", "/", "h", "X-User", "alice"): true,
				req("GET", "/", "h"): true},
		},
		{
			name:     "hosts without case or port; a JWT's principal is never there",
			yaml:     targeted("hosts", "shop", "["+gatewayRef+"]", "ALLOW", "to: [{operation: {hosts: [\"*.example.com\"]}}]\n  - from: [{source: {requestPrincipals: [\"*\"]}}]"),
			conn:     through(shopX, "10.0.0.1", 8080),
			want:     Outcome{Reason: ReasonNoAllowMatched, Rule: -1},
			warnings: 5, // the targetRefs, the two L7 rules, that none is left at L4, that a JWT's principal is absent
			requests: map[*Request]bool{req("GET", "/", "API.Example.com:8080"): true, req("GET", "/", "example.org"): false},
		},
		{
			name:     "a host with a port is the whole authority; several values of a header are one, joined",
			yaml:     targeted("mixed", "shop", "["+gatewayRef+"]", "DENY", "to: [{operation: {hosts: [\"admin.x:8080\"]}}]\n  - when: [{key: \"request.headers[x-tenant]\", values: [a]}]"),
			conn:     through(shopX, "10.0.0.1", 8080),
			want:     allowed,
			warnings: 3,
			requests: map[*Request]bool{req("GET", "/", "Admin.X:8080"): false, req("GET", "/", "admin.x:9090"): true, req("GET", "/", "admin.x"): true,
				req("GET", "/", "h", "X-Tenant", "a"): false, req("GET", "/", "h", "X-Tenant", "b", "X-Tenant", "a"): true},
		},
		{
			name:     "remoteIpBlocks and ipBlocks of one source must both hold",
			yaml:     targeted("both", "shop", "["+gatewayRef+"]", "ALLOW", "from: [{source: {ipBlocks: [10.0.0.0/8], remoteIpBlocks: [192.168.0.0/16]}}]"),
			conn:     through(shopX, "10.0.0.1", 8080),
			want:     Outcome{Reason: ReasonNoAllowMatched, Rule: -1},
			warnings: 3,
			requests: map[*Request]bool{req("GET", "/", "h"): false},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, ws := compileYAML(t, tc.yaml)
			if len(ws) != tc.warnings || !strings.Contains(ws[1].Msg, "enforces them per request on HTTP service ports") {
				t.Errorf("warnings:\n%s", warningsString(ws))
			}
			if d := set.EvaluateWaypoint(tc.conn, wp); d.Outcome != tc.want {
				t.Errorf("connection: got %v, want %v", d, tc.want)
			}
			for r, want := range tc.requests {
				c := tc.conn
				c.Request = r
				if d := set.EvaluateWaypoint(c, wp); d.Allow != want {
					t.Errorf("%s %s (host %s, headers %v): %v, want allowed %v", r.Method, r.Path, r.Host, r.Header, d, want)
				}
			}
		})
	}
}

func TestWaypointDryRun(t *testing.T) {
	set, _ := compileYAML(t, dryRun(targeted("dry", "shop", "[{kind: Service, name: reviews}]", "DENY", "{}")))
	d := set.EvaluateWaypoint(through(shopX, "10.0.0.1", 8080), WaypointTarget{"shop", "waypoint", "shop", "reviews"})
	want := Outcome{Reason: ReasonDenyMatched, Policy: "shop/dry", Kind: KindAuthorizationPolicy, Rule: 0}
	if !d.Allow || d.Reason != ReasonNoAllowPolicy || d.DryRun == nil || *d.DryRun != want {
		t.Errorf("got %v, want allowed with dry-run %v", d, want)
	}
}

// Istio admits a selector or targetRefs, never both (webhook and CRD); so does Parse.
func TestSelectorWithTargetRefsIsRejected(t *testing.T) {
	for _, refs := range []string{"targetRefs: [" + gatewayRef + "]", "targetRef: " + gatewayRef} {
		yaml := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\n" +
			"spec:\n  selector: {matchLabels: {app: web}}\n  " + refs + "\n"
		rs, ps := Parse("f.yaml", []byte(yaml))
		if rs != nil || len(ps) != 1 || ps[0].Field != "spec.selector" || ps[0].Msg != "only one of targetRefs or selector can be set" {
			t.Errorf("%s: resources %v, problems:\n%s", refs, rs, Problems(ps))
		}
	}
}

// Whatever the target, a nil or empty Set allows, and nothing panics.
func TestEvaluateWaypointNilAndEmptySets(t *testing.T) {
	empty, _ := Compile(nil, Options{})
	onlyNode, _ := compileYAML(t, denyFrom("deny-all", "istio-system", "notNamespaces: [nobody]")+"---\n"+pa("mesh", "istio-system", "", "STRICT", ""))
	names := []string{"", "waypoint", "shop", "istio-system", "istio-waypoint", "a/b", "\x00", strings.Repeat("x", 300)}
	conns := []Conn{{}, through("", "", 0), through(shopX, "203.0.113.7", 65535), {DestIP: addr("::ffff:10.0.0.1"), SourceIP: addr("fe80::1")}}
	for _, set := range []*Set{nil, empty, onlyNode} {
		if got := set.ApplicableWaypoint(WaypointTarget{"shop", "waypoint", "shop", "reviews"}); len(got) != 0 {
			t.Errorf("applicable: %v", got)
		}
		for i, ns := range names {
			for _, name := range names {
				tgt := WaypointTarget{ns, name, names[(i+1)%len(names)], name}
				for _, c := range conns {
					d := set.EvaluateWaypoint(c, tgt)
					if !d.Allow || d.Reason != ReasonNoAllowPolicy || d.DryRun != nil {
						t.Fatalf("%+v %+v: %v", c, tgt, d)
					}
				}
			}
		}
	}
}

func TestEvaluateWaypointDoesNotAllocate(t *testing.T) {
	set, _ := compileYAML(t, waypointYAML)
	c := through(shopX, "10.0.0.1", 8080)
	tgt := WaypointTarget{"shop", "waypoint", "shop", "reviews"}
	allocs := testing.AllocsPerRun(100, func() { set.EvaluateWaypoint(c, tgt) })
	if allocs > 0 {
		t.Errorf("EvaluateWaypoint allocates %.1f times per call", allocs)
	}
}

// An AUDIT policy at the waypoint marks the requests it matches (Decision.Audit) and decides nothing; the
// conditions on what the waypoint never has (SNI, Envoy metadata) never hold, their negations always do.
func TestWaypointAudit(t *testing.T) {
	wp := WaypointTarget{WaypointNamespace: "shop", WaypointName: "waypoint"}
	set, ws := compileYAML(t, targeted("audit", "shop", "["+gatewayRef+"]", "AUDIT", "to: [{operation: {paths: [/audited/*]}}]")+"---\n"+
		targeted("sni", "shop", "["+gatewayRef+"]", "AUDIT", "when: [{key: connection.sni, notValues: [x]}, {key: \"request.headers[x-audit]\", values: [\"1\"]}]")+"---\n"+
		targeted("meta", "shop", "["+gatewayRef+"]", "DENY", "when: [{key: \"experimental.envoy.filters.network.mysql_proxy[db.table]\", values: [t]}]"))
	if !strings.Contains(warningsString(ws), "when[0] connection.sni never hold") || !strings.Contains(warningsString(ws), "when[0] experimental.envoy.filters") {
		t.Errorf("warnings lack the absent attributes:\n%s", warningsString(ws))
	}
	for r, want := range map[*Request]string{
		req("GET", "/audited/x", "h"):             "shop/audit",
		req("GET", "/other", "h"):                 "",
		req("GET", "/other", "h", "X-Audit", "1"): "shop/sni",
	} {
		c := through("spiffe://cluster.local/ns/shop/sa/x", "10.0.0.1", 8080)
		c.Request = r
		d := set.EvaluateWaypoint(c, wp)
		if d.Audit != want || !d.Allow || d.Reason != ReasonNoAllowPolicy {
			t.Errorf("%s %s: %v, audit %q; want allowed (no ALLOW policy), audit %q", r.Path, r.Header, d, d.Audit, want)
		}
	}
}

// req is a request to the waypoint with headers as name, value pairs.
func req(method, path, host string, headers ...string) *Request {
	r := &Request{Method: method, Path: path, Host: host, Header: map[string][]string{}}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header[headers[i]] = append(r.Header[headers[i]], headers[i+1])
	}
	return r
}

func TestCustomAtWaypointDenies(t *testing.T) {
	set, _ := compileYAML(t, strings.Replace(targeted("ext", "shop", "["+gatewayRef+"]", "CUSTOM", "to: [{operation: {paths: [/ext/*]}}]"), "  rules:", "  provider: {name: opa}\n  rules:", 1))
	wp := WaypointTarget{WaypointNamespace: "shop", WaypointName: "waypoint"}
	for path, allow := range map[string]bool{"/ext/x": false, "/other": true} {
		c := through("spiffe://cluster.local/ns/shop/sa/x", "10.0.0.1", 8080)
		c.Request = req("GET", path, "h")
		if d := set.EvaluateWaypoint(c, wp); d.Allow != allow {
			t.Errorf("%s under a CUSTOM policy: %v, want allowed %v", path, d, allow)
		}
	}
}
