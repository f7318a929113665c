package policy

import (
	"strconv"
	"strings"
	"testing"
)

// compiledRules renders the rules of the one compiled policy named ns/name.
func compiledRules(t *testing.T, set *Set, key string) []string {
	t.Helper()
	for _, a := range set.Authorizations() {
		if a.Key() == key {
			out := []string{}
			for _, r := range a.Rules {
				out = append(out, strconv.Itoa(r.Index)+": "+r.String())
			}
			return out
		}
	}
	t.Fatalf("no compiled policy %s", key)
	return nil
}

func authzYAML(action, rules string) string {
	return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: default}\n" +
		"spec:\n  action: " + action + "\n  rules:\n" + rules
}

// One test per conversion rule of spec/authz.md "Conversion from the YAML".
func TestConversion(t *testing.T) {
	cases := []struct {
		name     string
		action   string
		rules    string
		want     []string // compiled rules, "index: rendering"
		warnings []string // substrings, one per expected warning
		allowed  []Conn   // connections the policy set must allow
		denied   []Conn   // and deny
	}{
		{
			name:   "from.source principals, namespaces and their not forms",
			action: "ALLOW",
			rules: `  - from:
    - source: {principals: [cluster.local/ns/default/sa/sleep], notNamespaces: [prod]}
    - source: {namespaces: [test], notPrincipals: [cluster.local/ns/test/sa/bad]}
`,
			want:    []string{"0: [notNamespaces prod principals cluster.local/ns/default/sa/sleep | namespaces test notPrincipals cluster.local/ns/test/sa/bad]"},
			allowed: []Conn{conn(sleep, ""), conn("spiffe://cluster.local/ns/test/sa/good", "")},
			denied:  []Conn{conn("spiffe://cluster.local/ns/test/sa/bad", ""), conn("", "")},
		},
		{
			name:   "ipBlocks and notIpBlocks: addresses, CIDRs, IPv6",
			action: "ALLOW",
			rules: `  - from:
    - source: {ipBlocks: [10.0.0.0/8, 192.168.1.7, "fd00::/8"], notIpBlocks: [10.1.0.0/16, 10.0.0.9]}
`,
			want:    []string{"0: [sourceIPs 10.0.0.0/8,192.168.1.7/32,fd00::/8 notSourceIPs 10.1.0.0/16,10.0.0.9/32]"},
			allowed: []Conn{conn("", "10.2.3.4"), conn("", "192.168.1.7"), conn("", "fd00::1"), conn("", "::ffff:10.2.3.4")},
			denied:  []Conn{conn("", "10.1.2.3"), conn("", "10.0.0.9"), conn("", "192.168.1.8"), conn("", "")},
		},
		{
			name:   "ports and notPorts",
			action: "ALLOW",
			rules: `  - to:
    - operation: {ports: ["8080", "9090"]}
    - operation: {notPorts: ["22", "8080"]}
`,
			want:    []string{"0: [ports 8080,9090 | notPorts 22,8080]"},
			allowed: []Conn{withPort(conn("", ""), 8080), withPort(conn("", ""), 443)},
			denied:  []Conn{withPort(conn("", ""), 22)},
		},
		{
			name:   "exact, prefix, suffix and presence values",
			action: "ALLOW",
			rules: `  - from:
    - source: {principals: ["cluster.local/ns/default/*"]}
    - source: {principals: ["*/sa/admin"]}
    - source: {namespaces: ["team-*"]}
    - source: {namespaces: ["*-prod"], notPrincipals: ["*"]}
`,
			want: []string{"0: [principals cluster.local/ns/default/* | principals */sa/admin | namespaces team-* | namespaces *-prod notPrincipals *]"},
			allowed: []Conn{conn(sleep, ""), conn("spiffe://other.td/ns/x/sa/admin", ""),
				conn("spiffe://cluster.local/ns/team-a/sa/x", "")},
			denied: []Conn{conn("spiffe://cluster.local/ns/a-prod/sa/x", ""), conn("", ""), conn("spiffe://cluster.local/ns/x/sa/admins", "")},
		},
		{
			name:    "presence on principals admits any identity, no plaintext",
			action:  "ALLOW",
			rules:   "  - from:\n    - source: {principals: [\"*\"]}\n",
			want:    []string{"0: [principals *]"},
			allowed: []Conn{conn(sleep, "")},
			denied:  []Conn{conn("", "10.0.0.1")},
		},
		{
			name:    "serviceAccounts: name alone is in the policy's namespace",
			action:  "ALLOW",
			rules:   "  - from:\n    - source: {serviceAccounts: [sleep, other/robot]}\n",
			want:    []string{"0: [serviceAccounts default/sleep,other/robot]"},
			allowed: []Conn{conn(sleep, ""), conn("spiffe://elsewhere.td/ns/other/sa/robot", "")},
			denied:  []Conn{conn("spiffe://cluster.local/ns/other/sa/sleep", ""), conn("", "")},
		},
		{
			name:   "from, to and when are separate clauses that must all hold",
			action: "ALLOW",
			rules: `  - from:
    - source: {namespaces: [default]}
    to:
    - operation: {ports: ["8080"]}
    when:
    - key: source.ip
      values: [10.0.0.0/8]
`,
			want:    []string{"0: [ports 8080] AND [namespaces default] AND [sourceIPs 10.0.0.0/8]"},
			allowed: []Conn{conn(sleep, "10.0.0.1")},
			denied:  []Conn{conn(sleep, "11.0.0.1"), withPort(conn(sleep, "10.0.0.1"), 80), conn("", "10.0.0.1")},
		},
		{
			name:   "when: every L4 key, values and notValues",
			action: "ALLOW",
			rules: `  - when:
    - {key: source.ip, values: [10.0.0.0/8], notValues: [10.9.0.0/16]}
    - {key: source.namespace, values: ["def*"], notValues: [defunct]}
    - {key: source.principal, values: ["*/sa/sleep"], notValues: [evil.td/ns/default/sa/sleep]}
    - {key: destination.ip, values: [10.0.0.2], notValues: [10.0.0.3]}
    - {key: destination.port, values: ["8080", 9090], notValues: ["9090"]}
`,
			want: []string{"0: [sourceIPs 10.0.0.0/8 notSourceIPs 10.9.0.0/16] AND [namespaces def* notNamespaces defunct]" +
				" AND [principals */sa/sleep notPrincipals evil.td/ns/default/sa/sleep] AND [destinationIPs 10.0.0.2/32 notDestinationIPs 10.0.0.3/32]" +
				" AND [ports 8080,9090 notPorts 9090]"},
			allowed: []Conn{conn(sleep, "10.0.0.1")},
			denied: []Conn{conn(sleep, "10.9.0.1"), conn("spiffe://evil.td/ns/default/sa/sleep", "10.0.0.1"),
				conn("spiffe://cluster.local/ns/defunct/sa/sleep", "10.0.0.1"), withPort(conn(sleep, "10.0.0.1"), 9090),
				withDest(conn(sleep, "10.0.0.1"), "10.0.0.3")},
		},
		{
			name:   "L7 operation in an ALLOW rule drops the whole rule",
			action: "ALLOW",
			rules: `  - to:
    - operation: {ports: ["8080"], methods: [GET], paths: ["/api/*"]}
  - from:
    - source: {namespaces: [trusted]}
`,
			want:     []string{"1: [namespaces trusted]"},
			warnings: []string{"default/p: spec.rules[0]: uses L7 attributes (to[0].operation.methods, to[0].operation.paths): in an ALLOW policy the whole rule is dropped"},
			allowed:  []Conn{conn("spiffe://cluster.local/ns/trusted/sa/x", "")},
			denied:   []Conn{conn(sleep, "")},
		},
		{
			name:   "L7 source in an ALLOW rule drops the whole rule",
			action: "ALLOW",
			rules:  "  - from:\n    - source: {namespaces: [default], requestPrincipals: [\"*\"]}\n    - source: {remoteIpBlocks: [1.2.3.4]}\n",
			want:   []string{},
			warnings: []string{"from[0].source.requestPrincipals, from[1].source.remoteIpBlocks): in an ALLOW policy",
				"every rule was dropped: this ALLOW policy still applies but allows nothing"},
			denied: []Conn{conn(sleep, "")},
		},
		{
			name:     "L7 when key in an ALLOW rule drops the whole rule",
			action:   "ALLOW",
			rules:    "  - from:\n    - source: {namespaces: [default]}\n    when:\n    - {key: \"request.headers[x-user]\", values: [admin]}\n",
			want:     []string{},
			warnings: []string{"when[0] request.headers[x-user]", "allows nothing"},
			denied:   []Conn{conn(sleep, "")},
		},
		{
			name:   "L7 parts of a DENY rule are removed; the rest still denies (more than written)",
			action: "DENY",
			rules: `  - from:
    - source: {namespaces: [default], requestPrincipals: ["*"]}
    to:
    - operation: {ports: ["8080"], methods: [POST]}
`,
			want:     []string{"0: [ports 8080] AND [namespaces default]"},
			warnings: []string{"in a DENY policy they are removed, so the rule denies more than written"},
			allowed:  []Conn{withPort(conn(sleep, ""), 80), conn("", "")},
			denied:   []Conn{conn(sleep, "")},
		},
		{
			name:     "a DENY operation that was only L7 leaves an empty match: the rule never denies",
			action:   "DENY",
			rules:    "  - to:\n    - operation: {methods: [DELETE]}\n",
			want:     []string{"0: [{}]"},
			warnings: []string{"leaves a condition that cannot match, so the rule never denies"},
			allowed:  []Conn{conn(sleep, ""), conn("", "")},
		},
		{
			name:     "a DENY when that was only L7 leaves an empty match: the rule never denies",
			action:   "DENY",
			rules:    "  - from:\n    - source: {namespaces: [default]}\n    when:\n    - {key: request.auth.principal, values: [x]}\n",
			want:     []string{"0: [namespaces default] AND [{}]"},
			warnings: []string{"(when[0] request.auth.principal): in a DENY policy they are removed, which leaves a condition that cannot match, so the rule never denies"},
			allowed:  []Conn{conn(sleep, "")},
		},
		{
			name:     "a DENY rule with one usable and one L7-only operation denies on the usable one",
			action:   "DENY",
			rules:    "  - to:\n    - operation: {hosts: [example.com]}\n    - operation: {ports: [\"9090\"]}\n",
			want:     []string{"0: [{} | ports 9090]"},
			warnings: []string{"(to[0].operation.hosts): in a DENY policy they are removed, so the rule denies more than written"},
			allowed:  []Conn{conn(sleep, "")},
			denied:   []Conn{withPort(conn(sleep, ""), 9090)},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, ws := compileYAML(t, authzYAML(tc.action, tc.rules))
			got := compiledRules(t, set, "default/p")
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("compiled:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if len(ws) != len(tc.warnings) {
				t.Errorf("got %d warnings, want %d:\n%s", len(ws), len(tc.warnings), warningsString(ws))
			}
			for i, w := range tc.warnings {
				if i < len(ws) && !strings.Contains(ws[i].String(), w) {
					t.Errorf("warning %d = %q, want it to contain %q", i, ws[i], w)
				}
			}
			for _, c := range tc.allowed {
				if d := set.Evaluate(c); !d.Allow {
					t.Errorf("%s from %v: %v, want ALLOW", connString(c), c.SourceIP, d)
				}
			}
			for _, c := range tc.denied {
				if d := set.Evaluate(c); d.Allow {
					t.Errorf("%s from %v: %v, want DENY", connString(c), c.SourceIP, d)
				}
			}
		})
	}
}

func TestScopes(t *testing.T) {
	set, _ := compileYAML(t, allowFrom("global", "istio-system", "namespaces: [a]")+"---\n"+
		allowFrom("ns", "default", "namespaces: [a]")+"---\n"+selectorPolicy("sel", "default", "app: web")+"---\n"+
		selectorPolicy("root-sel", "istio-system", "app: web"))
	want := map[string]Scope{"istio-system/global": ScopeGlobal, "default/ns": ScopeNamespace,
		"default/sel": ScopeWorkloadSelector, "istio-system/root-sel": ScopeWorkloadSelector}
	for _, a := range set.Authorizations() {
		if a.Scope != want[a.Key()] {
			t.Errorf("%s: scope %s, want %s", a.Key(), a.Scope, want[a.Key()])
		}
	}
	if set.Len() != 4 {
		t.Errorf("Len() = %d", set.Len())
	}
}

// Policies with targetRefs are compiled for the waypoint role (waypoint_test.go), never for the node.
func TestTargetRefPoliciesAreForWaypoints(t *testing.T) {
	for _, ref := range []string{
		"targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}",
		"targetRefs: [{kind: Service, group: \"\", name: reviews}]",
	} {
		set, ws := compileYAML(t, "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: wp, namespace: default}\n"+
			"spec:\n  "+ref+"\n  action: DENY\n  rules:\n  - to:\n    - operation: {methods: [DELETE]}\n")
		if set.Len() != 0 {
			t.Errorf("%s: a waypoint policy was compiled for the node", ref)
		}
		// On the waypoint's ports that are not HTTP, the L7 rule is narrowed as it would be at the node.
		if len(ws) != 2 || !strings.Contains(ws[0].Msg, "applies to a waypoint") || !strings.Contains(ws[1].Msg, "the rule never denies; the agent's waypoint enforces them per request on HTTP service ports") {
			t.Errorf("%s: warnings:\n%s", ref, warningsString(ws))
		}
		wp := set.WaypointPolicies()
		if len(wp) != 1 || wp[0].Name != "wp" || len(wp[0].AuthorizationPolicy.TargetRefs) != 1 {
			t.Errorf("%s: waypoint policies = %+v", ref, wp)
		}
		sum := set.Summary()
		if len(sum) != 1 || !sum[0].Enforced || sum[0].Scope != ScopeWaypoint || len(sum[0].TargetRefs) != 1 || sum[0].Rules != 1 {
			t.Errorf("%s: summary = %+v", ref, sum)
		}
		if !set.Evaluate(conn("", "")).Allow {
			t.Errorf("%s: a waypoint policy affected the node", ref)
		}
	}
}

func TestAuditAndCustomAreSkipped(t *testing.T) {
	set, ws := compileYAML(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: default}
spec:
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: default}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{}]
`)
	if set.Len() != 0 {
		t.Errorf("AUDIT/CUSTOM compiled: %v", set.Authorizations())
	}
	if len(ws) != 2 || !strings.Contains(ws[0].String(), "default/audit: spec.action: action AUDIT is not an L4 action") ||
		!strings.Contains(ws[1].String(), "default/ext-authz: spec.action: action CUSTOM is not an L4 action") {
		t.Errorf("warnings:\n%s", warningsString(ws))
	}
	if d := set.Evaluate(conn("", "")); !d.Allow || d.Reason != ReasonNoAllowPolicy {
		t.Errorf("%v", d)
	}
}

func TestDryRunAnnotation(t *testing.T) {
	set, _ := compileYAML(t, dryRun(denyFrom("d", "default", "namespaces: [default]")))
	as := set.Authorizations()
	if len(as) != 1 || !as[0].DryRun {
		t.Fatalf("dry-run not compiled: %+v", as)
	}
	if sum := set.Summary(); len(sum) != 1 || !sum[0].DryRun || !sum[0].Enforced {
		t.Errorf("summary: %+v", sum)
	}
}

func TestStrictPeerAuthentication(t *testing.T) {
	cases := []struct {
		mode          string
		plaintextDeny bool
	}{
		{"STRICT", true},
		{"PERMISSIVE", false},
		{"UNSET", false},
		{"DISABLE", false},
	}
	for _, tc := range cases {
		t.Run(tc.mode, func(t *testing.T) {
			set, ws := compileYAML(t, "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: mtls, namespace: default}\n"+
				"spec:\n  mtls: {mode: "+tc.mode+"}\n")
			if len(ws) != 0 {
				t.Errorf("warnings:\n%s", warningsString(ws))
			}
			d := set.Evaluate(conn("", "10.0.0.1"))
			if d.Allow == tc.plaintextDeny {
				t.Errorf("plaintext: %v", d)
			}
			if tc.plaintextDeny {
				want := Outcome{Reason: ReasonDenyMatched, Policy: "default/mtls", Kind: KindPeerAuthentication, Rule: 0}
				if d.Outcome != want {
					t.Errorf("got %v, want %v", d.Outcome, want)
				}
				if got := compiledRules(t, set, "default/mtls"); len(got) != 1 || got[0] != "0: [notPrincipals *]" {
					t.Errorf("compiled %v", got)
				}
			}
			if d := set.Evaluate(conn(sleep, "10.0.0.1")); !d.Allow {
				t.Errorf("mTLS peer: %v", d)
			}
		})
	}
}

func TestOtherKindsAreIgnored(t *testing.T) {
	set, ws := compileYAML(t, `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec: {jwtRules: [{issuer: x}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec: {hosts: [x]}
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: beta, namespace: default}
spec: {action: DENY, rules: [{}]}
`)
	if len(ws) != 2 || !strings.Contains(ws[0].String(), "RequestAuthentication (security.istio.io/v1) is not used by the node agent; ignored") ||
		!strings.Contains(ws[1].String(), "default/vs: VirtualService") {
		t.Errorf("warnings:\n%s", warningsString(ws))
	}
	if set.Len() != 1 {
		t.Errorf("the v1beta1 AuthorizationPolicy should compile: %v", set.Authorizations())
	}
}

func withPort(c Conn, port uint16) Conn {
	c.DestPort = port
	return c
}

func withDest(c Conn, ip string) Conn {
	c.DestIP = addr(ip)
	return c
}

func connString(c Conn) string {
	if c.SourceIdentity.IsZero() {
		return "plaintext"
	}
	return c.SourceIdentity.String()
}
