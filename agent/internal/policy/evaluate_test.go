package policy

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

const sleep = "spiffe://cluster.local/ns/default/sa/sleep"

func TestEvaluationOrder(t *testing.T) {
	cases := []struct {
		name     string
		yaml     string
		conn     Conn
		want     Outcome
		wantDry  *Outcome
		warnings int
	}{
		{
			name: "no policy: allow",
			conn: conn(sleep, "10.0.0.1"),
			want: Outcome{Allow: true, Reason: ReasonNoAllowPolicy, Rule: -1},
		},
		{
			name: "a DENY that matches wins over an ALLOW that matches",
			yaml: allowFrom("allow-sleep", "default", "principals: [cluster.local/ns/default/sa/sleep]") + "---\n" +
				denyFrom("deny-sleep", "default", "principals: [cluster.local/ns/default/sa/sleep]"),
			conn: conn(sleep, "10.0.0.1"),
			want: Outcome{Reason: ReasonDenyMatched, Policy: "default/deny-sleep", Kind: KindAuthorizationPolicy, Rule: 0},
		},
		{
			name: "a DENY that does not match, no ALLOW: allow",
			yaml: denyFrom("deny-other", "default", "namespaces: [other]"),
			conn: conn(sleep, "10.0.0.1"),
			want: Outcome{Allow: true, Reason: ReasonNoAllowPolicy, Rule: -1},
		},
		{
			name: "an ALLOW that matches: allow, naming policy and rule",
			yaml: allowFrom("allow", "default", "namespaces: [other]", "namespaces: [default]"),
			conn: conn(sleep, "10.0.0.1"),
			want: Outcome{Allow: true, Reason: ReasonAllowMatched, Policy: "default/allow", Kind: KindAuthorizationPolicy, Rule: 1},
		},
		{
			name: "ALLOW policies apply, none matches: deny",
			yaml: allowFrom("allow", "default", "namespaces: [other]"),
			conn: conn(sleep, "10.0.0.1"),
			want: Outcome{Reason: ReasonNoAllowMatched, Rule: -1},
		},
		{
			name: "allow-nothing (spec: {}) denies everything",
			yaml: "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: default}\nspec: {}\n",
			conn: conn(sleep, "10.0.0.1"),
			want: Outcome{Reason: ReasonNoAllowMatched, Rule: -1},
		},
		{
			name: "deny-all (rules: [{}]) denies everything",
			yaml: "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: default}\nspec: {action: DENY, rules: [{}]}\n",
			conn: conn("", "10.0.0.1"),
			want: Outcome{Reason: ReasonDenyMatched, Policy: "default/deny-all", Kind: KindAuthorizationPolicy, Rule: 0},
		},
		{
			name:     "the rule index is the YAML one, even after a dropped L7 rule",
			yaml:     allowFrom("allow", "default", "requestPrincipals: ['*']", "namespaces: [default]"),
			conn:     conn(sleep, "10.0.0.1"),
			want:     Outcome{Allow: true, Reason: ReasonAllowMatched, Policy: "default/allow", Kind: KindAuthorizationPolicy, Rule: 1},
			warnings: 1,
		},
		{
			name:    "a dry-run DENY is not enforced; the dry-run outcome says what it would do",
			yaml:    dryRun(denyFrom("deny-sleep", "default", "principals: [cluster.local/ns/default/sa/sleep]")),
			conn:    conn(sleep, "10.0.0.1"),
			want:    Outcome{Allow: true, Reason: ReasonNoAllowPolicy, Rule: -1},
			wantDry: &Outcome{Reason: ReasonDenyMatched, Policy: "default/deny-sleep", Kind: KindAuthorizationPolicy, Rule: 0},
		},
		{
			name:    "a dry-run ALLOW does not make ALLOW policies apply",
			yaml:    dryRun(allowFrom("allow-other", "default", "namespaces: [other]")),
			conn:    conn(sleep, "10.0.0.1"),
			want:    Outcome{Allow: true, Reason: ReasonNoAllowPolicy, Rule: -1},
			wantDry: &Outcome{Reason: ReasonNoAllowMatched, Rule: -1},
		},
		{
			name: "a dry-run ALLOW beside an enforced one",
			yaml: dryRun(allowFrom("allow-dry", "default", "namespaces: [default]")) + "---\n" +
				allowFrom("allow-other", "default", "namespaces: [other]"),
			conn:    conn(sleep, "10.0.0.1"),
			want:    Outcome{Reason: ReasonNoAllowMatched, Rule: -1},
			wantDry: &Outcome{Allow: true, Reason: ReasonAllowMatched, Policy: "default/allow-dry", Kind: KindAuthorizationPolicy, Rule: 0},
		},
		{
			name: "dry-run \"false\" is enforced",
			yaml: annotate(denyFrom("deny-sleep", "default", "principals: [cluster.local/ns/default/sa/sleep]"), `istio.io/dry-run: "false"`),
			conn: conn(sleep, "10.0.0.1"),
			want: Outcome{Reason: ReasonDenyMatched, Policy: "default/deny-sleep", Kind: KindAuthorizationPolicy, Rule: 0},
		},
		{
			name: "two DENY policies match: the first by namespace/name is reported",
			yaml: denyFrom("b-deny", "default", "namespaces: [default]") + "---\n" +
				denyFrom("a-deny", "istio-system", "namespaces: [default]") + "---\n" +
				denyFrom("a-deny", "default", "namespaces: [default]"),
			conn: conn(sleep, "10.0.0.1"),
			want: Outcome{Reason: ReasonDenyMatched, Policy: "default/a-deny", Kind: KindAuthorizationPolicy, Rule: 0},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, ws := compileYAML(t, tc.yaml)
			if len(ws) != tc.warnings {
				t.Errorf("warnings:\n%s", warningsString(ws))
			}
			for range 20 { // the reported policy must not depend on map order
				d := set.Evaluate(tc.conn)
				if d.Outcome != tc.want {
					t.Fatalf("got  %v\nwant %v", d.Outcome, tc.want)
				}
				switch {
				case tc.wantDry == nil && d.DryRun != nil:
					t.Fatalf("unexpected dry-run outcome %v", d.DryRun)
				case tc.wantDry != nil && (d.DryRun == nil || *d.DryRun != *tc.wantDry):
					t.Fatalf("dry-run: got %v, want %v", d.DryRun, tc.wantDry)
				}
			}
		})
	}
}

func TestWhichPoliciesApply(t *testing.T) {
	yaml := allowFrom("global", "istio-system", "namespaces: [nobody]") + "---\n" +
		allowFrom("ns-wide", "default", "namespaces: [nobody]") + "---\n" +
		allowFrom("other-ns", "other", "namespaces: [nobody]") + "---\n" +
		selectorPolicy("web", "default", "app: web") + "---\n" +
		selectorPolicy("web-v2", "default", "app: web\n      version: v2") + "---\n" +
		selectorPolicy("db", "default", "app: db") + "---\n" +
		selectorPolicy("web-elsewhere", "other", "app: web") + "---\n" +
		selectorPolicy("root-web", "istio-system", "app: web")
	set, _ := compileYAML(t, yaml)
	cases := []struct {
		name      string
		namespace string
		labels    map[string]string
		want      []string
	}{
		{"web in default", "default", map[string]string{"app": "web"},
			[]string{"default/ns-wide", "default/web", "istio-system/global", "istio-system/root-web"}},
		{"web v2 needs both labels", "default", map[string]string{"app": "web", "version": "v2"},
			[]string{"default/ns-wide", "default/web", "default/web-v2", "istio-system/global", "istio-system/root-web"}},
		{"db in default", "default", map[string]string{"app": "db", "tier": "data"},
			[]string{"default/db", "default/ns-wide", "istio-system/global"}},
		{"no labels in a namespace without policies", "empty", nil, []string{"istio-system/global"}},
		{"web in other", "other", map[string]string{"app": "web"},
			[]string{"istio-system/global", "istio-system/root-web", "other/other-ns", "other/web-elsewhere"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Conn{DestNamespace: tc.namespace, DestLabels: tc.labels}
			var got []string
			for _, a := range set.Applicable(c) {
				got = append(got, a.Key())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("applicable = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRootNamespaceOption(t *testing.T) {
	yaml := allowFrom("p", "istio-system", "namespaces: [nobody]") + "---\n" + allowFrom("q", "mesh-root", "namespaces: [nobody]")
	rs, _ := Parse("t.yaml", []byte(yaml))
	set, _ := Compile(rs, Options{RootNamespace: "mesh-root"})
	got := set.Applicable(Conn{DestNamespace: "default"})
	if len(got) != 1 || got[0].Key() != "mesh-root/q" || got[0].Scope != ScopeGlobal {
		t.Errorf("with root mesh-root, default sees %v", got)
	}
	if got := set.Applicable(Conn{DestNamespace: "istio-system"}); len(got) != 2 {
		t.Errorf("istio-system is an ordinary namespace now: %v", got)
	}
	if set.RootNamespace() != "mesh-root" {
		t.Errorf("RootNamespace() = %q", set.RootNamespace())
	}
	def, _ := Compile(rs, Options{})
	if def.RootNamespace() != DefaultRootNamespace {
		t.Errorf("default root = %q", def.RootNamespace())
	}
}

func TestNilSetAllows(t *testing.T) {
	var s *Set
	d := s.Evaluate(conn("", "10.0.0.1"))
	if !d.Allow || d.Reason != ReasonNoAllowPolicy || s.Len() != 0 || s.Summary() != nil || s.Authorizations() != nil {
		t.Errorf("nil set: %v", d)
	}
	empty, ws := Compile(nil, Options{})
	if empty.Len() != 0 || len(ws) != 0 || !empty.Evaluate(conn("", "")).Allow {
		t.Error("empty set should allow")
	}
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	set, _ := compileYAML(t, allowFrom("allow", "default", "principals: [cluster.local/ns/default/sa/sleep]")+"---\n"+
		denyFrom("deny", "default", "namespaces: [bad]")+"---\n"+selectorPolicy("web", "default", "app: web"))
	c := conn(sleep, "10.0.0.1")
	allocs := testing.AllocsPerRun(100, func() { set.Evaluate(c) })
	if allocs > 0 {
		t.Errorf("Evaluate allocates %.1f times per call", allocs)
	}
}

func TestDecisionString(t *testing.T) {
	d := Decision{Outcome: Outcome{Reason: ReasonDenyMatched, Policy: "ns/p", Kind: KindAuthorizationPolicy, Rule: 2},
		DryRun: &Outcome{Allow: true, Reason: ReasonNoAllowPolicy, Rule: -1}}
	want := "DENY: a DENY policy matched (AuthorizationPolicy ns/p, rule 2); dry-run: ALLOW: no ALLOW policy applies"
	if d.String() != want {
		t.Errorf("got  %s\nwant %s", d, want)
	}
}

// YAML builders for the tests.

func allowFrom(name, namespace string, sources ...string) string {
	return policyYAML(name, namespace, "ALLOW", sources)
}

func denyFrom(name, namespace string, sources ...string) string {
	return policyYAML(name, namespace, "DENY", sources)
}

func policyYAML(name, namespace, action string, sources []string) string {
	s := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: " + name +
		"\n  namespace: " + namespace + "\nspec:\n  action: " + action + "\n  rules:\n"
	for _, src := range sources {
		s += "  - from:\n    - source:\n        " + src + "\n"
	}
	return s
}

func selectorPolicy(name, namespace, labels string) string {
	return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: " + name +
		"\n  namespace: " + namespace + "\nspec:\n  selector:\n    matchLabels:\n      " + labels +
		"\n  rules:\n  - from:\n    - source:\n        namespaces: [nobody]\n"
}

func dryRun(yaml string) string { return annotate(yaml, `istio.io/dry-run: "true"`) }

func annotate(yaml, annotation string) string {
	return strings.Replace(yaml, "metadata:\n", "metadata:\n  annotations:\n    "+annotation+"\n", 1)
}

// A Set is shared by every connection goroutine: Evaluate and the accessors only read (run with -race).
func TestConcurrentEvaluate(t *testing.T) {
	set, _ := compileYAML(t, allowFrom("allow", "default", "namespaces: [default]")+"---\n"+
		pa("strict", "default", "", "STRICT", "")+dryRun(denyFrom("dry", "default", "namespaces: [x]")))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				c := conn(sleep, "10.0.0.1")
				if (g+i)%2 == 0 {
					c.SourceIdentity = id("")
				}
				set.Evaluate(c)
				set.Applicable(c)
				set.Summary()
			}
		}()
	}
	wg.Wait()
}

// Compile indexes every compiled policy whatever the slice capacities: appending the PeerAuthentication
// DENYs to the compiled list once shared its array, and the sort then left some policies out of the index
// and others (the DENYs) in it twice.
func TestEveryPolicyIsIndexed(t *testing.T) {
	for n := range 12 {
		yaml := selectorPolicy("web", "default", "app: web") + "---\n" +
			strings.Replace(denyFrom("web-deny", "default", "namespaces: [default]"), "spec:\n", "spec:\n  selector: {matchLabels: {app: web}}\n", 1)
		for i := range n {
			yaml += "---\n" + allowFrom(fmt.Sprintf("p%d", i), fmt.Sprintf("ns%d", i), "namespaces: [nobody]")
		}
		yaml += "---\n" + pa("strict", "default", "", "STRICT", "")
		set, _ := compileYAML(t, yaml)
		var got []string
		for _, a := range set.Applicable(conn(sleep, "10.0.0.1")) {
			got = append(got, a.Key())
		}
		if want := []string{"default/strict", "default/web", "default/web-deny"}; !slices.Equal(got, want) {
			t.Errorf("%d other policies: applicable %v, want %v", n, got, want)
		}
		if d := set.Evaluate(conn(sleep, "10.0.0.1")); d.Policy != "default/web-deny" {
			t.Errorf("%d other policies: %v", n, d)
		}
		for i := range n {
			key := fmt.Sprintf("ns%d/p%d", i, i)
			if got := set.Applicable(Conn{DestNamespace: fmt.Sprintf("ns%d", i)}); len(got) != 1 || got[0].Key() != key {
				t.Errorf("%d other policies: %s is not indexed: %v", n, key, got)
			}
		}
	}
}
