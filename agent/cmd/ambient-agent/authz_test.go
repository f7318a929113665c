package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runAuthzArgs(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := authzCommands().run(args, &out, &errb)
	return code, out.String(), errb.String()
}

var examplePolicies = filepath.Join("..", "..", "..", "conf", "policies")

func TestAuthzCheckExamples(t *testing.T) {
	cases := []struct {
		name      string
		args      []string
		code      int
		firstLine string
		decided   string
	}{
		{
			name: "frontend may reach the cart API",
			args: []string{"-namespace", "shop", "-labels", "app=cart,version=v1", "-dest", "10.0.0.7:8080",
				"-source-identity", "spiffe://cluster.local/ns/frontend/sa/web", "-source-ip", "10.0.0.9"},
			code: 0, firstLine: "ALLOW",
			decided: "decided by: AuthorizationPolicy shop/cart-from-frontend, rule 0: an ALLOW policy matched\n  rule 0: [ports 8080] AND [namespaces frontend]",
		},
		{
			name: "the legacy batch job is denied first",
			args: []string{"-namespace", "shop", "-labels", "app=cart", "-dest", "10.0.0.7:8080",
				"-source-identity", "spiffe://cluster.local/ns/legacy/sa/batch"},
			code: 3, firstLine: "DENY",
			decided: "decided by: AuthorizationPolicy shop/deny-legacy-batch, rule 0: a DENY policy matched",
		},
		{
			name: "plaintext is refused by STRICT mTLS",
			args: []string{"-namespace", "shop", "-labels", "app=cart", "-dest", "10.0.0.7:8080", "-source-ip", "10.0.0.9"},
			code: 3, firstLine: "DENY",
			decided: "decided by: PeerAuthentication shop/cart-health-port, rule 0: a DENY policy matched\n  rule 0: [notPrincipals *] AND [notPorts 8081]",
		},
		{
			name: "the PERMISSIVE health port still needs an ALLOW",
			args: []string{"-namespace", "shop", "-labels", "app=cart", "-dest", "10.0.0.7:8081"},
			code: 3, firstLine: "DENY",
			decided: "decided by: no single policy: ALLOW policies apply, none matched",
		},
		{
			name: "a namespace without policies allows everything",
			args: []string{"-namespace", "elsewhere", "-dest", "[fd00::7]:80"},
			code: 0, firstLine: "ALLOW",
			decided: "decided by: no single policy: no ALLOW policy applies",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runAuthzArgs(append([]string{"check", "-policy-dir", examplePolicies}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			if first, _, _ := strings.Cut(out, "\n"); first != tc.firstLine {
				t.Errorf("first line %q, want %q", first, tc.firstLine)
			}
			if !strings.Contains(out, tc.decided) {
				t.Errorf("stdout does not say %q:\n%s", tc.decided, out)
			}
			if errOut != "" {
				t.Errorf("stderr: %s", errOut)
			}
		})
	}
}

func TestAuthzCheckListsApplicablePolicies(t *testing.T) {
	_, out, _ := runAuthzArgs("check", "-policy-dir", examplePolicies, "-namespace", "shop", "-labels", "app=cart",
		"-dest", "10.0.0.7:8080", "-source-identity", "spiffe://cluster.local/ns/frontend/sa/web")
	for _, want := range []string{
		"connection: spiffe://cluster.local/ns/frontend/sa/web -> 10.0.0.7:8080 in namespace shop {app=cart}",
		"policies that apply (3 of 5):",
		"ALLOW AuthorizationPolicy shop/cart-from-frontend (WORKLOAD_SELECTOR)",
		"DENY  AuthorizationPolicy shop/deny-legacy-batch (NAMESPACE)",
		"DENY  PeerAuthentication shop/cart-health-port (WORKLOAD_SELECTOR)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

func TestAuthzCheckDryRunAndWarnings(t *testing.T) {
	dir := t.TempDir()
	writeAuthzFile(t, filepath.Join(dir, "p.yaml"), `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-sleep
  namespace: default
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: [DELETE]}}]
`)
	code, out, errOut := runAuthzArgs("check", "-policy-dir", dir, "-namespace", "default", "-dest", "10.0.0.1:80",
		"-source-identity", "spiffe://cluster.local/ns/default/sa/sleep")
	if code != 0 || !strings.HasPrefix(out, "ALLOW\n") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	if !strings.Contains(out, "dry-run (not enforced): DENY, decided by: AuthorizationPolicy default/deny-sleep, rule 0") {
		t.Errorf("no dry-run line:\n%s", out)
	}
	if !strings.Contains(errOut, "warning: "+filepath.Join(dir, "p.yaml")+":12 (document 2): default/get-only: spec.rules[0]: uses L7 attributes") {
		t.Errorf("warnings on stderr:\n%s", errOut)
	}
}

func TestAuthzCheckBadPolicyDir(t *testing.T) {
	dir := t.TempDir()
	writeAuthzFile(t, filepath.Join(dir, "a.yaml"), "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: default}\nspec: {action: DENY}\n")
	writeAuthzFile(t, filepath.Join(dir, "b.yaml"), "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: b}\nspec:\n  rules: [{from: [{source: {ipBlocks: [x]}}]}]\n")
	code, out, errOut := runAuthzArgs("check", "-policy-dir", dir, "-namespace", "default", "-dest", "10.0.0.1:80")
	if code != 2 || out != "" {
		t.Errorf("exit %d, stdout %q", code, out)
	}
	for _, want := range []string{
		filepath.Join(dir, "a.yaml") + ":4 (document 1): default/a: spec.rules: a DENY policy without rules never applies",
		filepath.Join(dir, "b.yaml") + ":3 (document 1): metadata.namespace: required",
		filepath.Join(dir, "b.yaml") + ":5 (document 1): spec.rules[0].from[0].source.ipBlocks[0]: bad IP address \"x\"",
		"has 3 problem(s); nothing was evaluated",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}

	code, _, errOut = runAuthzArgs("check", "-policy-dir", filepath.Join(dir, "missing"), "-namespace", "default", "-dest", "10.0.0.1:80")
	if code != 2 || !strings.Contains(errOut, "cannot read the policy directory: no such file or directory") {
		t.Errorf("missing directory: exit %d, stderr %q", code, errOut)
	}
}

func TestAuthzBadInput(t *testing.T) {
	base := []string{"check", "-policy-dir", examplePolicies, "-namespace", "shop", "-dest", "10.0.0.1:80"}
	cases := []struct {
		args []string
		want string
	}{
		{nil, "usage: ambient-agent authz <command>"},
		{[]string{"explain"}, `unknown command "explain"`},
		{[]string{"check"}, "-policy-dir is required"},
		{[]string{"check", "-policy-dir", examplePolicies, "-dest", "10.0.0.1:80"}, "-namespace is required"},
		{[]string{"check", "-policy-dir", examplePolicies, "-namespace", "shop"}, "-dest is required"},
		{append(base[:5:5], "-dest", "10.0.0.1"), `-dest "10.0.0.1" is not IP:PORT`},
		{append(base, "-labels", "app"), `-labels: "app" is not key=value`},
		{append(base, "-labels", "a=1,a=2"), `-labels: "a" is given twice`},
		{append(base, "-source-identity", "cluster.local/ns/a/sa/b"), "is not a SPIFFE ID"},
		{append(base, "-source-ip", "nope"), `-source-ip "nope" is not an IP address`},
		{append(base, "-root-namespace", ""), "-root-namespace must not be empty"},
		{append(base, "extra"), `unexpected argument "extra"`},
		{append(base, "-nope"), "flag provided but not defined: -nope"},
	}
	for _, tc := range cases {
		code, out, errOut := runAuthzArgs(tc.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
	for _, args := range [][]string{{"-h"}, {"help"}, {"check", "-h"}} {
		if code, _, _ := runAuthzArgs(args...); code != 0 {
			t.Errorf("%v: exit %d, want 0", args, code)
		}
	}
}

func writeAuthzFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
