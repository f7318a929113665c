package policy

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadDir(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"b-deny.yml":        denyFrom("deny", "default", "namespaces: [bad]"),
		"a-allow.yaml":      allowFrom("allow", "default", "namespaces: [good]"),
		"README.md":         "not a policy",
		".hidden.yaml":      "garbage: [",
		"sub/nested.yaml":   "garbage: [",
		"strict.yaml":       pa("strict", "istio-system", "", "STRICT", ""),
		"empty.yaml":        "",
		"other-kinds.yaml":  "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
		"z-dryrun.yaml":     dryRun(denyFrom("dry", "default", "namespaces: [good]")),
		"x-waypoint.yaml":   "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: wp, namespace: default}\nspec:\n  targetRefs: [{kind: Service, name: s}]\n",
		"y-l7-allow.yaml":   authzYAML("ALLOW", "  - to:\n    - operation: {methods: [GET]}\n"),
		"y-second-ns.yaml":  allowFrom("allow", "prod", "namespaces: [good]"),
		"y-audit.yaml":      "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: audit, namespace: default}\nspec: {action: AUDIT}\n",
		"y-custom.yaml":     "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext, namespace: default}\nspec: {action: CUSTOM, provider: {name: x}, rules: [{}]}\n",
		"y-namespace.yaml":  pa("ns-permissive", "legacy", "", "PERMISSIVE", ""),
		"y-port-level.yaml": pa("web", "default", "{app: web}", "", "{\"8080\": {mode: PERMISSIVE}}"),
	})
	resources, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, r := range resources {
		files = append(files, filepath.Base(r.Source.File))
	}
	want := "a-allow.yaml b-deny.yml other-kinds.yaml strict.yaml x-waypoint.yaml y-audit.yaml y-custom.yaml y-l7-allow.yaml y-namespace.yaml y-port-level.yaml y-second-ns.yaml z-dryrun.yaml"
	if strings.Join(files, " ") != want {
		t.Errorf("loaded, in order:\n%s\nwant:\n%s", strings.Join(files, " "), want)
	}

	set, warnings, err := Load(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 6 { // ConfigMap, waypoint, AUDIT, CUSTOM, the L7 rule, and that nothing is left
		t.Errorf("warnings:\n%s", warningsString(warnings))
	}
	if d := set.Evaluate(Conn{DestNamespace: "default", SourceIdentity: id("spiffe://cluster.local/ns/good/sa/x")}); !d.Allow {
		t.Errorf("%v", d)
	}
	if d := set.Evaluate(Conn{DestNamespace: "default"}); d.Allow || d.Policy != "istio-system/strict" {
		t.Errorf("plaintext: %v", d)
	}
}

func TestLoadDirAllOrNothing(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"good.yaml":  allowFrom("allow", "default", "namespaces: [good]"),
		"bad1.yaml":  allowFrom("bad", "default", "ipBlocks: [not-an-ip]"),
		"bad2.yaml":  "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: default}\nspec: {action: NOPE}\n",
		"dup-a.yaml": denyFrom("same", "default", "namespaces: [a]"),
		"dup-b.yaml": denyFrom("same", "default", "namespaces: [b]"),
	})
	resources, err := LoadDir(dir)
	if resources != nil {
		t.Errorf("got %d resources from a bad directory", len(resources))
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error is not Problems: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"bad1.yaml:11 (document 1): default/bad: spec.rules[0].from[0].source.ipBlocks[0]: bad IP address \"not-an-ip\"",
		"bad2.yaml:4 (document 1): default/x: spec.action: \"NOPE\" is not an action",
		"dup-b.yaml:1 (document 1): default/same: metadata.name: AuthorizationPolicy defined twice; first at " + filepath.Join(dir, "dup-a.yaml") + ":1 (document 1)",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	if len(ps) != 3 {
		t.Errorf("got %d problems:\n%s", len(ps), msg)
	}
	if set, _, err := Load(dir, Options{}); set != nil || err == nil {
		t.Error("Load of a bad directory returned a set")
	}
}

func TestLoadDirMissing(t *testing.T) {
	_, err := LoadDir(filepath.Join(t.TempDir(), "nope"))
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 || !strings.Contains(err.Error(), "cannot read the policy directory: no such file or directory") {
		t.Errorf("got %v", err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing directory is not fs.ErrNotExist: %v", err)
	}
}

func TestLoadDirFollowsSymlinks(t *testing.T) {
	// Kubernetes ConfigMap mounts and many deploy tools link files into place.
	dir := writeFiles(t, map[string]string{"..data/p.yaml": denyFrom("deny", "default", "namespaces: [bad]")})
	if err := os.Symlink(filepath.Join(dir, "..data/p.yaml"), filepath.Join(dir, "p.yaml")); err != nil {
		t.Fatal(err)
	}
	rs, err := LoadDir(dir)
	if err != nil || len(rs) != 1 {
		t.Errorf("got %v, %v", rs, err)
	}
}

// The shipped examples must load without problems or warnings.
func TestExamplePolicies(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "conf", "policies")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("no example policies: %v", err)
	}
	set, warnings, err := Load(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings:\n%s", warningsString(warnings))
	}
	if set.Len() == 0 {
		t.Error("no policy compiled from the examples")
	}
}

// The YAML examples of docs/authorization.md must load without problems or warnings.
func TestDocExamples(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "authorization.md"))
	if err != nil {
		t.Skipf("no docs: %v", err)
	}
	blocks := 0
	for _, part := range strings.Split(string(doc), "```yaml\n")[1:] {
		block, _, ok := strings.Cut(part, "```")
		if !ok {
			t.Fatal("unterminated yaml block")
		}
		blocks++
		rs, ps := Parse("authorization.md", []byte(block))
		if len(ps) > 0 {
			t.Errorf("example %d:\n%s", blocks, Problems(ps))
			continue
		}
		_, ws := Compile(rs, Options{})
		// Saying that a targetRefs policy is for waypoints is all a waypoint example may warn about.
		ws = slices.DeleteFunc(ws, func(w Warning) bool { return strings.Contains(w.Msg, "applies to a waypoint") })
		if len(ws) > 0 {
			t.Errorf("example %d:\n%s", blocks, warningsString(ws))
		}
	}
	if blocks < 5 {
		t.Errorf("found only %d examples", blocks)
	}
}
