package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// vmFiles writes what istioctl x workload entry configure writes for WorkloadGroup shop/web, with ISTIO_SVC_IP.
func vmFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"cluster.env": "CANONICAL_REVISION='latest'\nCANONICAL_SERVICE='web'\nISTIO_METAJSON_LABELS='{\"app\":\"web\"}'\n" +
			"ISTIO_META_CLUSTER_ID='Kubernetes'\nISTIO_META_NETWORK=''\nISTIO_META_WORKLOAD_NAME='web'\nISTIO_NAMESPACE='shop'\n" +
			"ISTIO_SVC_IP='10.0.0.7'\nPOD_NAMESPACE='shop'\nSERVICE_ACCOUNT='web'\nTRUST_DOMAIN='cluster.local'\n",
		"mesh.yaml":     "defaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n",
		"root-cert.pem": selfSignedCA(),
		"istio-token":   "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsiaXN0aW8tY2EiXX0.c2ln",
		"hosts":         "10.0.0.2 istiod.istio-system.svc\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// join istio writes the root certificate, the token (root only) and a configuration that validates; it never
// replaces a configuration without -force, and -dry-run writes nothing.
func TestJoinIstio(t *testing.T) {
	from, out := vmFiles(t), t.TempDir()
	cfg, istioDir := filepath.Join(out, "config.toml"), filepath.Join(out, "istio")
	code, stdout, stderr := run("join", "istio", "-from", from, "-node", "vm-1", "-config", cfg, "-istio-dir", istioDir, "-dry-run")
	if code != 0 || !strings.Contains(stdout, `address = "10.0.0.2:15012"`) {
		t.Fatalf("dry run: %d\n%s\n%s", code, stdout, stderr)
	}
	if _, err := os.Stat(cfg); !os.IsNotExist(err) {
		t.Fatalf("-dry-run wrote %s", cfg)
	}
	code, stdout, stderr = run("join", "istio", "-from", from, "-node", "vm-1", "-config", cfg, "-istio-dir", istioDir)
	if code != 0 {
		t.Fatalf("join: %d\n%s\n%s", code, stdout, stderr)
	}
	if fi, err := os.Stat(filepath.Join(istioDir, "tokens", "shop", "web")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the token: %v %v, want mode 0600", fi, err)
	}
	if _, err := os.Stat(filepath.Join(istioDir, "root-cert.pem")); err != nil {
		t.Error(err)
	}
	if code, out, errOut := run("validate", "-config", cfg); code != 0 {
		t.Errorf("validate the joined configuration: %d %s %s", code, out, errOut)
	}
	if code, _, stderr := run("join", "istio", "-from", from, "-config", cfg, "-istio-dir", istioDir); code != 1 || !strings.Contains(stderr, "exists; -force replaces it") {
		t.Errorf("a second join without -force: %d %s", code, stderr)
	}
	if code, _, stderr := run("join", "istio", "-config", cfg); code != 2 || !strings.Contains(stderr, "-from DIR is required") {
		t.Errorf("no -from: %d %s", code, stderr)
	}
	if code, _, stderr := run("join", "istio", "-from", t.TempDir(), "-config", cfg, "-force"); code != 1 || !strings.Contains(stderr, "cluster.env: no such file") {
		t.Errorf("an empty directory: %d %s", code, stderr)
	}
}

// selfSignedCA is a PEM root certificate, as istiod's CA makes one.
var selfSignedCA = sync.OnceValue(func() string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
})
