package policy

import (
	"strings"
	"testing"
)

const header = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: default\n"

// header2 names a second policy, so files of several documents hold no duplicates.
const header2 = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: q\n  namespace: default\n"

// Each case is one file; want lists its problems exactly, in order.
func TestParseProblems(t *testing.T) {
	cases := []struct {
		name string
		file string
		want []string
	}{
		{
			name: "YAML syntax error in the second document",
			file: header + "spec: {}\n---\n" + header2 + "spec:\n  rules: [\n",
			want: []string{"f.yaml:14 (document 2): invalid YAML: did not find expected node content"},
		},
		{
			name: "duplicate key",
			file: header + "spec:\n  action: DENY\n  action: ALLOW\n",
			want: []string{`f.yaml:8 (document 1): invalid YAML: key "action" already set in map`},
		},
		{
			name: "unknown field (a typo that would otherwise widen the rule)",
			file: header + "spec:\n  rules:\n  - form:\n    - source:\n        namespaces: [a]\n",
			want: []string{"f.yaml:8 (document 1): default/p: spec.rules[0].form: unknown field (known: from, to, when)"},
		},
		{
			name: "unknown top-level field",
			file: header + "sepc: {}\n",
			want: []string{"f.yaml:6 (document 1): default/p: sepc: unknown field (known: apiVersion, kind, metadata, spec, status)"},
		},
		{
			name: "bad ipBlocks and ports, with their exact lines",
			file: header + `spec:
  rules:
  - from:
    - source:
        ipBlocks:
        - 10.0.0.0/8
        - 10.0.0.300
        notIpBlocks: ["1.2.3.4/33"]
    to:
    - operation:
        ports: ["http", "70000"]
`,
			want: []string{
				"f.yaml:12 (document 1): default/p: spec.rules[0].from[0].source.ipBlocks[1]: bad IP address \"10.0.0.300\"",
				"f.yaml:13 (document 1): default/p: spec.rules[0].from[0].source.notIpBlocks[0]: bad CIDR range \"1.2.3.4/33\": netip.ParsePrefix(\"1.2.3.4/33\"): prefix length out of range",
				"f.yaml:16 (document 1): default/p: spec.rules[0].to[0].operation.ports[0]: bad port \"http\": must be a number from 0 to 65535",
				"f.yaml:16 (document 1): default/p: spec.rules[0].to[0].operation.ports[1]: bad port \"70000\": must be a number from 0 to 65535",
			},
		},
		{
			name: "metadata without name and namespace",
			file: "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  labels: {a: b}\nspec: {}\n",
			want: []string{
				"f.yaml:3 (document 1): metadata.name: required",
				"f.yaml:3 (document 1): metadata.namespace: required: a host has no `kubectl -n`, so every policy names its namespace",
			},
		},
		{
			name: "invalid names",
			file: "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: Bad_Name, namespace: \"ns.with.dots\"}\n",
			want: []string{
				"f.yaml:3 (document 1): ns.with.dots/Bad_Name: metadata.name: \"Bad_Name\" is not a valid name (lowercase letters, digits, '-' and '.', at most 253)",
				"f.yaml:3 (document 1): ns.with.dots/Bad_Name: metadata.namespace: \"ns.with.dots\" is not a valid namespace (lowercase letters, digits and '-', at most 63)",
			},
		},
		{
			name: "unknown action; DENY without rules",
			file: header + "spec:\n  action: REJECT\n---\n" + header2 + "spec:\n  action: DENY\n",
			want: []string{
				"f.yaml:7 (document 1): default/p: spec.action: \"REJECT\" is not an action (ALLOW, DENY, AUDIT or CUSTOM)",
				"f.yaml:14 (document 2): default/q: spec.rules: a DENY policy without rules never applies; add an empty rule `{}` to deny everything",
			},
		},
		{
			name: "empty source, missing source, null rule",
			file: header + "spec:\n  rules:\n  - from:\n    - source: {}\n    - {}\n  - null\n",
			want: []string{
				"f.yaml:9 (document 1): default/p: spec.rules[0].from[0].source: must not be empty",
				"f.yaml:10 (document 1): default/p: spec.rules[0].from[1].source: required",
				"f.yaml:11 (document 1): default/p: spec.rules[1]: must not be null (write {} for a rule that matches everything)",
			},
		},
		{
			name: "empty operation, empty value",
			file: header + "spec:\n  rules:\n  - to:\n    - operation: {}\n  - from:\n    - source: {principals: [\"\"]}\n",
			want: []string{
				"f.yaml:9 (document 1): default/p: spec.rules[0].to[0].operation: must not be empty",
				"f.yaml:11 (document 1): default/p: spec.rules[1].from[0].source.principals[0]: empty value not allowed",
			},
		},
		{
			name: "when conditions",
			file: header + `spec:
  rules:
  - when:
    - key: source.ip
      values: [nope]
    - key: destination.labels[app]
      values: [web]
    - key: source.namespace
    - values: [x]
    - key: source.color
      values: [red]
    - key: request.headers
      values: [x]
`,
			want: []string{
				"f.yaml:10 (document 1): default/p: spec.rules[0].when[0].values[0]: bad IP address \"nope\"",
				"f.yaml:11 (document 1): default/p: spec.rules[0].when[1].key: attribute destination.labels[app] is replaced by the workload selector",
				"f.yaml:13 (document 1): default/p: spec.rules[0].when[2]: at least one of values or notValues must be set for key source.namespace",
				"f.yaml:14 (document 1): default/p: spec.rules[0].when[3].key: required",
				"f.yaml:15 (document 1): default/p: spec.rules[0].when[4].key: unknown attribute \"source.color\"",
				"f.yaml:17 (document 1): default/p: spec.rules[0].when[5].key: bad key \"request.headers\": should have the form a[b]",
			},
		},
		{
			name: "serviceAccounts beside principals; bad service accounts",
			file: header + "spec:\n  rules:\n  - from:\n    - source: {principals: [a], serviceAccounts: [\"ns/*\"]}\n    - source: {notServiceAccounts: [a/b/c]}\n",
			want: []string{
				"f.yaml:9 (document 1): default/p: spec.rules[0].from[0].source.serviceAccounts[0]: bad service account \"ns/*\": wildcards are not supported",
				"f.yaml:9 (document 1): default/p: spec.rules[0].from[0].source: serviceAccounts cannot be set together with namespaces or principals",
				"f.yaml:10 (document 1): default/p: spec.rules[0].from[1].source.notServiceAccounts[0]: bad service account \"a/b/c\": want \"name\" or \"namespace/name\"",
			},
		},
		{
			name: "dry-run annotation: not a boolean; not for AUDIT; not for PeerAuthentication",
			file: strings.Replace(header, "  name: p\n", "  name: p\n  annotations: {istio.io/dry-run: \"yes please\"}\n", 1) + "spec: {action: AUDIT, rules: [{}]}\n---\n" +
				"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: pa\n  namespace: default\n  annotations:\n    istio.io/dry-run: \"true\"\n",
			want: []string{
				"f.yaml:5 (document 1): default/p: metadata.annotations[\"istio.io/dry-run\"]: \"yes please\" is not a boolean (use \"true\" or \"false\")",
				"f.yaml:5 (document 1): default/p: metadata.annotations[\"istio.io/dry-run\"]: dry-run is supported for ALLOW and DENY policies only, not AUDIT",
				"f.yaml:15 (document 2): default/pa: metadata.annotations[\"istio.io/dry-run\"]: only an AuthorizationPolicy may be dry-run; remove the annotation",
			},
		},
		{
			name: "non-string values",
			file: strings.Replace(header, "  name: p\n", "  name: p\n  annotations:\n    istio.io/dry-run: true\n", 1) +
				"spec:\n  selector:\n    matchLabels:\n      version: 1.10\n  rules:\n  - from:\n    - source: {namespaces: [1]}\n",
			want: []string{
				"f.yaml:6 (document 1): default/p: metadata.annotations[\"istio.io/dry-run\"]: must be a string, not a boolean (true) (quote it)",
				"f.yaml:11 (document 1): default/p: spec.selector.matchLabels.version: must be a string, not a number (1.1) (quote it)",
				"f.yaml:14 (document 1): default/p: spec.rules[0].from[0].source.namespaces[0]: must be a string, not a number (1) (quote it)",
			},
		},
		{
			name: "wrong shapes",
			file: header + "spec:\n  rules: {from: []}\n---\n" + header2 + "spec: [1]\n---\n- a list\n",
			want: []string{
				"f.yaml:7 (document 1): default/p: spec.rules: must be a list, not an object",
				"f.yaml:14 (document 2): default/q: spec: must be an object, not a list",
				"f.yaml:16 (document 3): a document must be a Kubernetes object (apiVersion, kind, metadata, spec), not a list",
			},
		},
		{
			name: "unsupported apiVersion; missing apiVersion and kind",
			file: strings.Replace(header, "security.istio.io/v1", "security.istio.io/v1alpha1", 1) + "---\nmetadata: {name: x}\n",
			want: []string{
				"f.yaml:1 (document 1): default/p: apiVersion: security.istio.io/v1alpha1 is not supported for AuthorizationPolicy: use security.istio.io/v1 (or v1beta1)",
				"f.yaml:7 (document 2): apiVersion: required (security.istio.io/v1 for Istio policies)",
				"f.yaml:7 (document 2): kind: required (AuthorizationPolicy or PeerAuthentication)",
			},
		},
		{
			name: "selector with targetRef; provider without CUSTOM; CUSTOM without provider",
			file: header + "spec:\n  selector: {matchLabels: {app: web}}\n  targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: wp}\n  provider: {name: opa}\n  rules: [{}]\n---\n" +
				header2 + "spec:\n  action: CUSTOM\n  rules: [{}]\n",
			want: []string{
				"f.yaml:7 (document 1): default/p: spec.selector: only one of targetRefs or selector can be set",
				"f.yaml:9 (document 1): default/p: spec.provider: must not be set with action ALLOW, only with CUSTOM",
				"f.yaml:17 (document 2): default/q: spec.provider.name: required with action CUSTOM",
			},
		},
		{
			name: "targetRefs as istiod's webhook and CRD check them",
			file: header + "spec:\n  targetRefs:\n  - {kind: Gateway, name: wp}\n  - {kind: Pod, name: web}\n" +
				"  - {group: gateway.networking.k8s.io, kind: Gateway, name: wp, namespace: other}\n" +
				"  - {group: core, kind: Service, name: ok}\n  - {group: networking.istio.io, kind: ServiceEntry, name: ok}\n" +
				"  - {group: gateway.networking.k8s.io, kind: GatewayClass, name: istio-waypoint}\n---\n" +
				header2 + "spec:\n  targetRefs: [" + strings.Repeat("{kind: Service, name: s}, ", 16) + "{kind: Service, name: s}]\n",
			want: []string{
				"f.yaml:8 (document 1): default/p: spec.targetRefs[0].kind: core/Gateway is not a target: use a Service (group \"\"), a networking.istio.io ServiceEntry, or a gateway.networking.k8s.io Gateway or GatewayClass",
				"f.yaml:9 (document 1): default/p: spec.targetRefs[1].kind: core/Pod is not a target: use a Service (group \"\"), a networking.istio.io ServiceEntry, or a gateway.networking.k8s.io Gateway or GatewayClass",
				"f.yaml:10 (document 1): default/p: spec.targetRefs[2].namespace: must not be set: cross namespace referencing is not supported (the target is in the policy's namespace)",
				"f.yaml:21 (document 2): default/q: spec.targetRefs: at most 16 references, not 17",
			},
		},
		{
			name: "PeerAuthentication problems",
			file: "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: pa, namespace: default}\nspec:\n" +
				"  mtls: {mode: strict}\n  portLevelMtls:\n    \"0\": {mode: STRICT}\n    \"8080\": {mode: PERMISSIVE}\n",
			want: []string{
				"f.yaml:5 (document 1): default/pa: spec.mtls.mode: \"strict\" is not a mode (UNSET, DISABLE, PERMISSIVE or STRICT)",
				"f.yaml:6 (document 1): default/pa: spec.portLevelMtls: a mesh or namespace PeerAuthentication (no selector) cannot have port level mTLS",
				"f.yaml:7 (document 1): default/pa: spec.portLevelMtls[\"0\"]: port must be in range 1..65535",
			},
		},
		{
			name: "the same policy twice",
			file: header + "spec: {}\n---\n" + header + "spec: {}\n",
			want: []string{"f.yaml:8 (document 2): default/p: metadata.name: AuthorizationPolicy defined twice; first at f.yaml:1 (document 1)"},
		},
		{
			name: "bad creationTimestamp",
			file: strings.Replace(header, "  name: p\n", "  name: p\n  creationTimestamp: yesterday\n", 1),
			want: []string{"f.yaml:5 (document 1): default/p: metadata.creationTimestamp: not an RFC 3339 time: \"yesterday\""},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs, ps := Parse("f.yaml", []byte(tc.file))
			if rs != nil {
				t.Errorf("a file with problems returned %d resources", len(rs))
			}
			var got []string
			for _, p := range ps {
				got = append(got, p.String())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestParseAcceptsClusterOutput(t *testing.T) {
	// What `kubectl get authorizationpolicy -o yaml` prints, with status and server-set metadata.
	file := `# leading comment
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{}"
  creationTimestamp: "2025-06-01T10:00:00Z"
  generation: 1
  name: allow-sleep
  namespace: default
  resourceVersion: "1234"
  uid: 0f2c4a1e-0000-0000-0000-000000000000
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals:
        - cluster.local/ns/default/sa/sleep
    to:
    - operation:
        ports: [8080, "9090"]
status:
  conditions: []
...
---

---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
data: {a: b}
`
	rs, ps := Parse("cluster.yaml", []byte(file))
	if len(ps) > 0 {
		t.Fatalf("problems:\n%s", Problems(ps))
	}
	if len(rs) != 2 || rs[0].Source.Doc != 1 || rs[0].Source.Line != 3 || rs[1].Source.Doc != 2 || rs[1].Source.Line != 30 {
		t.Fatalf("resources: %+v", rs)
	}
	ap := rs[0]
	if ap.Key() != "default/allow-sleep" || ap.CreationTimestamp.Year() != 2025 || ap.DryRun() {
		t.Errorf("metadata: %+v", ap)
	}
	if got := ap.AuthorizationPolicy.Rules[0].To[0].Ports; strings.Join(got, ",") != "8080,9090" {
		t.Errorf("ports %v", got)
	}
	if rs[1].Kind != "ConfigMap" || rs[1].AuthorizationPolicy != nil || rs[1].Name != "unrelated" {
		t.Errorf("other kind: %+v", rs[1])
	}
}

func TestParseEmpty(t *testing.T) {
	for _, f := range []string{"", "\n\n", "# only a comment\n", "---\n---\n", "\xef\xbb\xbf"} {
		rs, ps := Parse("e.yaml", []byte(f))
		if len(rs) != 0 || len(ps) != 0 {
			t.Errorf("%q: %v %v", f, rs, ps)
		}
	}
}

func TestProblemsError(t *testing.T) {
	ps := Problems{{Source: Source{File: "a.yaml", Doc: 1, Line: 3}, Policy: "ns/p", Field: "spec", Msg: "bad"}, {Source: Source{File: "b.yaml"}, Msg: "unreadable"}}
	want := "a.yaml:3 (document 1): ns/p: spec: bad\nb.yaml: unreadable"
	if ps.Error() != want {
		t.Errorf("got %q", ps.Error())
	}
}
