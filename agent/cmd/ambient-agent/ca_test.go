package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func runCACmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := caCommands().run(args, &out, &errb)
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

func TestCAIssueIPSANs(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	if code, _, errOut := runCACmd("init", "-dir", caDir); code != 0 {
		t.Fatalf("ca init: exit %d: %s", code, errOut)
	}
	for _, ipArgs := range [][]string{
		{"-ip", "10.0.0.5", "-ip", "fd00::5"},
		{"-ip", "10.0.0.5,fd00::5"},
	} {
		out := t.TempDir()
		args := append([]string{"issue", "-dir", caDir, "-namespace", "shop", "-service-account", "web", "-out", out}, ipArgs...)
		code, stdout, errOut := runCACmd(args...)
		if code != 0 {
			t.Fatalf("ca %v: exit %d: %s", args, code, errOut)
		}
		if !strings.Contains(stdout, "with IP SANs 10.0.0.5,fd00::5") {
			t.Errorf("ca %v output %q does not name the IP SANs", args, stdout)
		}
		leaf := readLeaf(t, filepath.Join(out, "shop/web/cert-chain.pem"))
		var ips []string
		for _, ip := range leaf.IPAddresses {
			ips = append(ips, ip.String())
		}
		if strings.Join(ips, " ") != "10.0.0.5 fd00::5" || len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/web" {
			t.Errorf("ca %v: IP SANs %v, URIs %v; want exactly 10.0.0.5 and fd00::5 next to the identity", args, ips, leaf.URIs)
		}
	}
}

func readLeaf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
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
		{[]string{"issue", "-dir", caDir, "-out", caDir, "-ip", "10.0.0.5,bogus"}, 2, `IP SAN "bogus" is not an IP address`},
		{[]string{"issue", "-dir", caDir, "-out", caDir, "-ip", "10.0.0.5", "-ip", "::1"}, 2, `IP SAN "::1" is loopback`},
		{[]string{"issue", "-dir", caDir, "-out", caDir, "-ip", "0.0.0.0"}, 2, `IP SAN "0.0.0.0" is unspecified`},
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
