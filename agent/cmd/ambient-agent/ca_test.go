package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func runCACmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := runCA(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCAInitAndIssue(t *testing.T) {
	caDir, out := filepath.Join(t.TempDir(), "ca"), t.TempDir()
	if code, _, errOut := runCACmd("init", "-dir", caDir, "-trust-domain", "mesh.example"); code != 0 {
		t.Fatalf("ca init: exit %d: %s", code, errOut)
	}
	st, err := os.Stat(filepath.Join(caDir, "root-key.pem"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("root-key.pem: %v, mode %v; want 0600", err, st)
	}
	if code, _, errOut := runCACmd("init", "-dir", caDir, "-trust-domain", "mesh.example"); code != 1 || !strings.Contains(errOut, "refusing to overwrite") {
		t.Errorf("second ca init: exit %d, stderr %q; want 1 and a refusal", code, errOut)
	}
	code, stdout, errOut := runCACmd("issue", "-dir", caDir, "-namespace", "shop", "-service-account", "web", "-ttl", "24h", "-out", out)
	if code != 0 {
		t.Fatalf("ca issue: exit %d: %s", code, errOut)
	}
	if !strings.Contains(stdout, "spiffe://mesh.example/ns/shop/sa/web") {
		t.Errorf("ca issue output %q does not name the identity", stdout)
	}
	for _, p := range []string{"root-cert.pem", "shop/web/cert-chain.pem", "shop/web/key.pem"} {
		if _, err := os.Stat(filepath.Join(out, p)); err != nil {
			t.Errorf("ca issue did not write %s: %v", p, err)
		}
	}
	if openssl, err := exec.LookPath("openssl"); err == nil {
		b, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(caDir, "root-cert.pem"), filepath.Join(out, "shop/web/cert-chain.pem")).CombinedOutput()
		if err != nil {
			t.Errorf("openssl verify: %v\n%s", err, b)
		}
	}
	// Defaults: namespace and service account "default".
	if code, _, errOut := runCACmd("issue", "-dir", caDir, "-out", out); code != 0 {
		t.Fatalf("ca issue with defaults: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(out, "default/default/cert-chain.pem")); err != nil {
		t.Errorf("ca issue with defaults: %v", err)
	}
}

func TestCAUsageAndFailures(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage: ambient-agent ca"},
		{[]string{"sign"}, 2, `unknown command "sign"`},
		{[]string{"init"}, 2, "-dir is required"},
		{[]string{"init", "-dir", caDir, "-trust-domain", "spiffe://x/y"}, 2, "not a valid SPIFFE trust domain"},
		{[]string{"init", "-dir", caDir, "-trust-domain", "Upper.Case"}, 2, "not a valid SPIFFE trust domain"},
		{[]string{"init", "-dir", caDir, "extra"}, 2, "unexpected argument"},
		{[]string{"issue", "-dir", caDir}, 2, "-out is required"},
		{[]string{"issue", "-out", caDir}, 2, "-dir is required"},
		{[]string{"issue", "-dir", caDir, "-out", caDir, "-ttl", "-1h"}, 2, "not positive"},
		{[]string{"issue", "-dir", caDir, "-out", caDir, "-ttl", "soon"}, 2, "invalid value"},
		{[]string{"issue", "-dir", caDir, "-out", t.TempDir()}, 1, "root-cert.pem: no such file"},
	} {
		code, _, errOut := runCACmd(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("ca %v: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
	if code, out, _ := runCACmd("-h"); code != 0 || !strings.Contains(out, "issue") {
		t.Errorf("ca -h: exit %d, %q", code, out)
	}
	if code, _, _ := runCACmd("issue", "-h"); code != 0 {
		t.Errorf("ca issue -h: exit %d; want 0", code)
	}
}
