package vm

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
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/vmjoin"
)

// istioDir is the istio.io/istio module's source, as the go command has it.
func istioDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/istio").Output()
	if err != nil {
		t.Fatalf("go list -m istio.io/istio: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestJoinReadsIstioctlFiles: cluster.env, mesh.yaml and hosts exactly as Istio's golden files say istioctl writes
// them for a revisioned istiod (IPv4 and IPv6), with a root certificate and a token in place of the goldens'
// placeholders, make a configuration that validates: istiod dialled at the hosts file's address and checked for
// its name, the WorkloadGroup bar/foo as a workload with its service account, address and labels, DNS capture.
func TestJoinReadsIstioctlFiles(t *testing.T) {
	golden := filepath.Join(istioDir(t), "istioctl", "pkg", "workload", "testdata", "vmconfig")
	for _, tc := range []struct{ dir, svcIP, istiod string }{
		{"ipv4", "10.10.10.10", "10.10.10.11:15012"},
		{"ipv6", "fd00:10:96::1", "[fd00:10:96::2]:15012"},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			dir := t.TempDir()
			for _, name := range []string{vmjoin.ClusterEnv, vmjoin.MeshYAML, vmjoin.Hosts} {
				b, err := os.ReadFile(filepath.Join(golden, tc.dir, name+".golden"))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// The goldens' root certificate is "fake-CA-cert" and their token empty: a CA certificate and a JWT instead.
			root := selfSignedCA()
			for name, content := range map[string]string{vmjoin.RootCert: root, vmjoin.Token: "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsiaXN0aW8tY2EiXX0.c2ln"} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			j, err := vmjoin.Read([]string{dir}, netip.Addr{})
			if err != nil {
				t.Fatal(err)
			}
			text := j.Config("vm-1", vmjoin.Paths{RootCert: "/etc/ambient-agent/istio/root-cert.pem", TokenDir: "/etc/ambient-agent/istio/tokens"})
			cfg, err := config.Parse("joined.toml", []byte(text))
			if err != nil {
				t.Fatalf("the joined configuration does not validate: %v\n%s", err, text)
			}
			if cfg.Istio.Address != tc.istiod || cfg.Istio.ServerName != "istiod-rev-1.istio-system.svc" || cfg.Identity.Source != config.SourceIstio {
				t.Errorf("[istio] %+v, identity %q; want %s checked as istiod-rev-1.istio-system.svc", cfg.Istio, cfg.Identity.Source, tc.istiod)
			}
			if cfg.Node.ClusterID != "Kubernetes" || !cfg.DNS.Capture {
				t.Errorf("[node] %+v, dns capture %v", cfg.Node, cfg.DNS.Capture)
			}
			if len(cfg.Workloads) != 1 {
				t.Fatalf("workloads %+v", cfg.Workloads)
			}
			w := cfg.Workloads[0]
			if w.Name != "foo" || w.Namespace != "bar" || w.ServiceAccount != "vm-serviceaccount" || len(w.Addresses) != 1 ||
				w.Addresses[0].String() != tc.svcIP || w.Labels["service.istio.io/canonical-name"] != "foo" {
				t.Errorf("workload %+v", w)
			}
		})
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
