package vmjoin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

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

// clusterEnv is cluster.env as istioctl writes it (sorted, every value shell-quoted), for group name in ns.
func clusterEnv(name, ns, extra string) string {
	return "CANONICAL_REVISION='latest'\nCANONICAL_SERVICE='" + name + "'\nISTIO_INBOUND_PORTS='*'\n" +
		"ISTIO_LOCAL_EXCLUDE_PORTS='22,15090,15021,15020'\n" +
		`ISTIO_METAJSON_LABELS='{"app":"` + name + `","service.istio.io/canonical-name":"` + name + `","service.istio.io/canonical-revision":"latest"}'` + "\n" +
		"ISTIO_META_CLUSTER_ID='Kubernetes'\nISTIO_META_DNS_CAPTURE='true'\nISTIO_META_MESH_ID=''\nISTIO_META_NETWORK='vm-net'\n" +
		"ISTIO_META_WORKLOAD_NAME='" + name + "'\nISTIO_NAMESPACE='" + ns + "'\nISTIO_SERVICE='" + name + "." + ns + "'\nISTIO_SERVICE_CIDR='*'\n" +
		extra + "POD_NAMESPACE='" + ns + "'\nSERVICE_ACCOUNT='" + name + "-sa'\nTRUST_DOMAIN='cluster.local'\n"
}

func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func group(name, ns, extra string) map[string]string {
	return map[string]string{
		ClusterEnv: clusterEnv(name, ns, extra),
		MeshYAML:   "defaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n  proxyMetadata:\n    POD_NAMESPACE: " + ns + "\n",
		RootCert:   selfSignedCA(),
		Token:      "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsiaXN0aW8tY2EiXX0.c2ln",
		Hosts:      "10.0.0.2 istiod.istio-system.svc\n",
	}
}

func TestReadTwoGroups(t *testing.T) {
	web := writeDir(t, group("web", "shop", "ISTIO_META_AUTO_REGISTER_GROUP='web'\nISTIO_SVC_IP='10.0.0.7'\n"))
	db := writeDir(t, group("db", "shop", ""))
	j, err := Read([]string{web, db}, netip.MustParseAddr("10.0.0.7"))
	if err != nil {
		t.Fatal(err)
	}
	if j.Address != "10.0.0.2:15012" || j.ServerName != "istiod.istio-system.svc" || j.Network != "vm-net" || j.ClusterID != "Kubernetes" ||
		j.TrustDomain != "cluster.local" || !j.DNSCapture {
		t.Errorf("join %+v", j)
	}
	text := j.Config("vm-1", Paths{RootCert: "/etc/ambient-agent/istio/root-cert.pem", TokenDir: "/etc/ambient-agent/istio/tokens"})
	for _, want := range []string{
		`address = "10.0.0.2:15012"`, `server_name = "istiod.istio-system.svc"`, `source = "istio"`, `network = "vm-net"`,
		`name = "web"` + "\nnamespace = \"shop\"\nservice_account = \"web-sa\"\naddresses = [\"10.0.0.7\"]",
		`labels = { "app" = "web", "service.istio.io/canonical-name" = "web", "service.istio.io/canonical-revision" = "latest" }`,
		`addresses = ["10.0.0.7"]` + "\nauto_register = \"web\"",
		"[dns]\ncapture = true",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the configuration lacks %q:\n%s", want, text)
		}
	}
	if p := (Paths{TokenDir: "/t"}).TokenPath(j.Groups[1]); p != "/t/shop/db-sa" {
		t.Errorf("db's token goes to %s", p)
	}
}

func TestReadRefuses(t *testing.T) {
	ok := group("web", "shop", "ISTIO_SVC_IP='10.0.0.7'\n")
	with := func(name, content string) map[string]string {
		m := map[string]string{}
		for k, v := range ok {
			m[k] = v
		}
		if content == "" {
			delete(m, name)
		} else {
			m[name] = content
		}
		return m
	}
	for _, tc := range []struct {
		files map[string]string
		want  string
	}{
		{with(Token, ""), "istio-token: no such file"},
		{with(ClusterEnv, "POD_NAMESPACE='shop'\n"), "ISTIO_META_WORKLOAD_NAME is missing"},
		{with(ClusterEnv, clusterEnv("web", "shop", "ISTIO_SVC_IP='10.0.0.7'\nNOPE='unterminated\n")), "line 15 (NOPE): unterminated single quote"},
		{with(MeshYAML, "defaultConfig: {}\n"), "discoveryAddress is missing"},
		{with(RootCert, "not a certificate"), "something other than PEM blocks"},
		{with(RootCert, selfSignedCA()+"-----BEGIN EC PRIVATE KEY-----\nMHc=\n-----END EC PRIVATE KEY-----\n"), `a "EC PRIVATE KEY" block`},
		{with(Token, "not a token"), "not a JWT"},
		{with(Hosts, "not-an-ip istiod.istio-system.svc\n"), `"not-an-ip" is not an IP address`},
		{group("web", "shop", ""), "no ISTIO_SVC_IP"},
	} {
		_, err := Read([]string{writeDir(t, tc.files)}, netip.Addr{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Read: %v, want %q", err, tc.want)
		}
	}
	// A link (to a root-only file, say) or a FIFO in place of a file: refused, never read through.
	linked := writeDir(t, ok)
	if err := os.Remove(filepath.Join(linked, RootCert)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/shadow", filepath.Join(linked, RootCert)); err != nil {
		t.Fatal(err)
	}
	if _, err := Read([]string{linked}, netip.Addr{}); err == nil || !strings.Contains(err.Error(), "a symbolic link") {
		t.Errorf("a linked root certificate: %v", err)
	}
	fifo := writeDir(t, ok)
	os.Remove(filepath.Join(fifo, Token))
	if err := syscall.Mkfifo(filepath.Join(fifo, Token), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read([]string{fifo}, netip.Addr{}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a FIFO token: %v", err)
	}
	// Two groups that disagree on the network, or name the same WorkloadGroup.
	other := group("db", "shop", "ISTIO_SVC_IP='10.0.0.7'\n")
	other[ClusterEnv] = strings.Replace(other[ClusterEnv], "'vm-net'", "'other-net'", 1)
	_, err := Read([]string{writeDir(t, ok), writeDir(t, other)}, netip.Addr{})
	if err == nil || !strings.Contains(err.Error(), `network (ISTIO_META_NETWORK) "other-net"`) {
		t.Errorf("two networks: %v", err)
	}
	_, err = Read([]string{writeDir(t, ok), writeDir(t, ok)}, netip.Addr{})
	if err == nil || !strings.Contains(err.Error(), "WorkloadGroup shop/web again") {
		t.Errorf("the same group twice: %v", err)
	}
}

func TestShellWords(t *testing.T) {
	for in, want := range map[string]string{`'a b'`: "a b", `''`: "", `plain`: "plain", `'it'"'"'s'`: "it's", `"x\"y"`: `x"y`, `a\ b`: "a b"} {
		if got, err := shellWord(in); err != nil || got != want {
			t.Errorf("shellWord(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := shellWord("a b"); err == nil {
		t.Error("an unquoted space was accepted")
	}
}
