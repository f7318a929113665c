package meshca_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/meshca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var td = spiffeid.RequireTrustDomainFromString("mesh.example")

func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI: %v", name, err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
	return path
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestInitCreatesRootAndRefusesToOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := meshca.Init(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	root := ca.Root()
	if !root.IsCA || root.KeyUsage&x509.KeyUsageCertSign == 0 || root.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("root: CA %v, usage %v, key %v; want an ECDSA CA that signs certificates", root.IsCA, root.KeyUsage, root.PublicKeyAlgorithm)
	}
	if life := root.NotAfter.Sub(root.NotBefore); life < 5*365*24*time.Hour {
		t.Errorf("root lifetime %s; want years", life)
	}
	if got := mode(t, filepath.Join(dir, meshca.RootKeyFile)); got != 0o600 {
		t.Errorf("root key mode %o; want 600", got)
	}
	keyBefore, _ := os.ReadFile(filepath.Join(dir, meshca.RootKeyFile))
	if _, err := meshca.Init(dir, td); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("second Init = %v; want a refusal", err)
	}
	keyAfter, _ := os.ReadFile(filepath.Join(dir, meshca.RootKeyFile))
	if string(keyBefore) != string(keyAfter) {
		t.Error("a refused Init changed the root key")
	}
	// Only one of the two files present is refused too.
	os.Remove(filepath.Join(dir, meshca.RootKeyFile))
	if _, err := meshca.Init(dir, td); err == nil {
		t.Error("Init replaced a root whose key was missing")
	}
	loaded, err := meshca.Load(t.TempDir())
	if err == nil {
		t.Errorf("Load of an empty dir = %v", loaded)
	}
}

func TestLoadChecksTheRoot(t *testing.T) {
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	if _, err := meshca.Init(a, td); err != nil {
		t.Fatal(err)
	}
	if _, err := meshca.Init(b, td); err != nil {
		t.Fatal(err)
	}
	ca, err := meshca.Load(a)
	if err != nil || ca.TrustDomain() != td {
		t.Fatalf("Load = %v, %v; want trust domain %s", ca, err, td)
	}
	keyB, _ := os.ReadFile(filepath.Join(b, meshca.RootKeyFile))
	os.WriteFile(filepath.Join(a, meshca.RootKeyFile), keyB, 0o600)
	if _, err := meshca.Load(a); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("Load with another root's key = %v; want does not match", err)
	}
	os.WriteFile(filepath.Join(a, meshca.RootKeyFile), []byte("junk"), 0o600)
	if _, err := meshca.Load(a); err == nil || !strings.Contains(err.Error(), meshca.RootKeyFile) {
		t.Errorf("Load with a junk key = %v; want an error naming the key file", err)
	}
}

func TestIssuedCertificatesVerifyWithOpenSSL(t *testing.T) {
	openssl := requireTool(t, "openssl")
	caDir, out := filepath.Join(t.TempDir(), "ca"), t.TempDir()
	ca, err := meshca.Init(caDir, td)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://mesh.example/ns/shop/sa/web")
	svid, err := ca.Issue(id, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteIdentity(out, svid); err != nil {
		t.Fatal(err)
	}
	chain := identity.ChainPath(out, "shop", "web")
	cmd := exec.Command(openssl, "verify", "-CAfile", filepath.Join(caDir, meshca.RootCertFile), chain)
	if b, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(b), ": OK") {
		t.Fatalf("openssl verify: %v\n%s", err, b)
	}
	// The copied bundle is the root.
	cmd = exec.Command(openssl, "verify", "-CAfile", identity.BundlePath(out), chain)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl verify against OUT/root-cert.pem: %v\n%s", err, b)
	}
	// Exactly one URI SAN, and it is the identity: as OpenSSL prints it...
	b, err := exec.Command(openssl, "x509", "-in", chain, "-noout", "-ext", "subjectAltName").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl x509: %v\n%s", err, b)
	}
	if n := strings.Count(string(b), "URI:"); n != 1 || !strings.Contains(string(b), "URI:"+id.String()) {
		t.Errorf("subjectAltName has %d URIs:\n%s\nwant exactly URI:%s", n, b, id)
	}
	// ...and as Go parses it, with the usages of a workload certificate.
	leaf := parseCert(t, chain)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("SANs: URIs %v, DNS %v, IPs %v; want only %s", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, id)
	}
	if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || leaf.KeyUsage&x509.KeyUsageCertSign != 0 {
		t.Errorf("leaf: CA %v, key usage %v; want a non-CA with digitalSignature and without certSign", leaf.IsCA, leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 {
		t.Errorf("extended key usages %v; want server and client auth", leaf.ExtKeyUsage)
	}
	if life := leaf.NotAfter.Sub(time.Now()); life < 47*time.Hour || life > 48*time.Hour {
		t.Errorf("leaf expires in %s; want 48h", life)
	}
	if got := mode(t, identity.KeyPath(out, "shop", "web")); got != 0o600 {
		t.Errorf("key mode %o; want 600", got)
	}
	// The output directory works as the files source's directory as is.
	src, err := identity.New(identity.Options{Source: identity.SourceFiles, Dir: out, TrustDomain: td, Identities: []spiffeid.ID{id}})
	if err != nil {
		t.Fatalf("files source on the ca issue output: %v", err)
	}
	if !src.Ready() {
		t.Error("files source on the ca issue output is not ready")
	}
}

func parseCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(data)
	if block == nil || strings.TrimSpace(string(rest)) != "" {
		t.Fatalf("%s: want exactly one PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssueRefusesBadRequests(t *testing.T) {
	ca, err := meshca.Init(filepath.Join(t.TempDir(), "ca"), td)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://mesh.example/ns/a/sa/b")
	if _, err := ca.Issue(spiffeid.RequireFromString("spiffe://other.example/ns/a/sa/b"), time.Hour); err == nil {
		t.Error("issued for another trust domain")
	}
	if _, err := ca.Issue(id, 0); err == nil {
		t.Error("issued with a zero ttl")
	}
	long, err := ca.Issue(id, 100*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if long.Leaf.NotAfter.After(ca.Root().NotAfter) {
		t.Errorf("leaf outlives the root: %s > %s", long.Leaf.NotAfter, ca.Root().NotAfter)
	}
	notIstio, err := ca.Issue(spiffeid.RequireFromString("spiffe://mesh.example/web"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteIdentity(t.TempDir(), notIstio); err == nil {
		t.Error("wrote a non-Istio identity into the layout")
	}
}

func TestWriteIdentityKeepsOneRootPerDirectory(t *testing.T) {
	out := t.TempDir()
	id := spiffeid.RequireFromString("spiffe://mesh.example/ns/a/sa/b")
	ca1, _ := meshca.Init(filepath.Join(t.TempDir(), "1"), td)
	ca2, _ := meshca.Init(filepath.Join(t.TempDir(), "2"), td)
	s1, _ := ca1.Issue(id, time.Hour)
	if err := ca1.WriteIdentity(out, s1); err != nil {
		t.Fatal(err)
	}
	// Reissuing from the same root rotates in place.
	again, _ := ca1.Issue(id, time.Hour)
	if err := ca1.WriteIdentity(out, again); err != nil {
		t.Fatal(err)
	}
	if got := parseCert(t, identity.ChainPath(out, "a", "b")); got.SerialNumber.Cmp(again.Leaf.SerialNumber) != 0 {
		t.Error("the reissued certificate did not replace the old one")
	}
	s2, _ := ca2.Issue(id, time.Hour)
	if err := ca2.WriteIdentity(out, s2); err == nil || !strings.Contains(err.Error(), "does not contain this CA's root") {
		t.Errorf("WriteIdentity of another root's certificate = %v; want a refusal", err)
	}
	if got := parseCert(t, identity.ChainPath(out, "a", "b")); got.SerialNumber.Cmp(again.Leaf.SerialNumber) != 0 {
		t.Error("a refused WriteIdentity replaced the certificate")
	}
}

// Written into a directory owned by another user (the service's identity dir),
// the files get that owner, so the service can read its key.
func TestWriteIdentityKeepsTheDirectoryOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to chown (CI=true)")
		}
		t.Skip("needs root to chown")
	}
	ca, err := meshca.Init(filepath.Join(t.TempDir(), "ca"), spiffeid.RequireTrustDomainFromString("cluster.local"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "identity")
	if err := os.Mkdir(out, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(out, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/web")
	svid, err := ca.Issue(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteIdentity(out, svid); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"root-cert.pem", "default", "default/web", "default/web/key.pem", "default/web/cert-chain.pem"} {
		fi, err := os.Stat(filepath.Join(out, p))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("%s owned by %d:%d, want 65534:65534", p, st.Uid, st.Gid)
		}
	}
}
