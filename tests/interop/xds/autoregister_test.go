package xds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	istioapi "istio.io/api/networking/v1alpha3"
	"istio.io/istio/pilot/pkg/features"
	istioxds "istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/schema/gvk"
	"istio.io/istio/pkg/security"
	pkica "istio.io/istio/security/pkg/pki/ca"
	caserver "istio.io/istio/security/pkg/server/ca"
	"istio.io/istio/security/pkg/server/ca/authenticate"
	"k8s.io/apimachinery/pkg/runtime"

	agentxds "github.com/ambient-agent/ambient-agent/agent/internal/xds"
)

// meshCA is istiod's self-signed CA (as pilot/pkg/bootstrap makes it) with its root in a PEM file.
type meshCA struct {
	ca       *pkica.IstioCA
	rootPEM  []byte
	rootPath string
}

func newMeshCA(t *testing.T) *meshCA {
	t.Helper()
	opts, err := pkica.NewSelfSignedDebugIstioCAOptions("", 24*time.Hour, 24*time.Hour, 48*time.Hour, "cluster.local", 2048)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pkica.NewIstioCA(opts)
	if err != nil {
		t.Fatal(err)
	}
	m := &meshCA{ca: ca, rootPEM: ca.GetCAKeyCertBundle().GetRootCertPem(), rootPath: filepath.Join(t.TempDir(), "root-cert.pem")}
	if err := os.WriteFile(m.rootPath, m.rootPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return m
}

// serve serves s's discovery (and Istio's CA server, when ca is set) on ln as istiod serves 15012: TLS with a
// certificate of the mesh's CA, a client certificate verified against the mesh root when one is given, and
// istiod's authenticators (the client certificate's first, then the others).
func (m *meshCA) serve(t *testing.T, s *istioxds.FakeDiscoveryServer, ln net.Listener, others []security.Authenticator, ca *caserver.Server) {
	t.Helper()
	certPEM, keyPEM, err := m.ca.GenKeyCert([]string{"istiod.istio-system.svc"}, time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(m.rootPEM)
	s.Discovery.Authenticators = append([]security.Authenticator{&authenticate.ClientCertAuthenticator{}}, others...)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serving},
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool})))
	s.Discovery.Register(gs)
	if ca != nil {
		ca.Register(gs)
	}
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
}

// issue is a workload certificate of the mesh's CA for the SPIFFE ID id.
func (m *meshCA) issue(t *testing.T, id string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	leafPEM, err := m.ca.Sign(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), pkica.CertOpts{SubjectIDs: []string{id}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(leafPEM)
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
}

// register runs the agent's registration client for workload ns/name (service account sa) at ip, presenting
// cert, through WorkloadGroup group; cancel ends it.
func register(t *testing.T, addr, root string, cert tls.Certificate, group, ns, name, sa, ip string) context.CancelFunc {
	t.Helper()
	c, err := agentxds.New(agentxds.Options{
		Address: addr, ServerName: "istiod.istio-system.svc", RootCert: root,
		Namespace: ns, NodeName: "vm-1", NodeID: agentxds.NodeIDFor(netip.MustParseAddr(ip), name, ns),
		TLS: func() (*tls.Config, error) { return &tls.Config{Certificates: []tls.Certificate{cert}}, nil },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registration: &agentxds.Registration{Group: group, ServiceAccount: sa, Addresses: []netip.Addr{netip.MustParseAddr(ip)},
			Labels: map[string]string{"version": "v1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return func() { cancel(); <-done }
}

// TestAutoRegistration: istiod's own discovery server and auto-registration controller, over TLS with its
// client-certificate authenticator. The agent's registration stream, authenticated by the workload's certificate,
// makes istiod create the WorkloadEntry from the WorkloadGroup (address, service account, labels, the HBONE tunnel
// label); closing it (a graceful stop) makes istiod delete it after its grace period. A workload that presents
// web's certificate cannot register through a WorkloadGroup of another service account.
func TestAutoRegistration(t *testing.T) {
	grace := features.WorkloadEntryCleanupGracePeriod
	features.WorkloadEntryCleanupGracePeriod = time.Second
	t.Cleanup(func() { features.WorkloadEntryCleanupGracePeriod = grace })
	// WorkloadGroups are in istiod's config store, where its controller looks them up.
	group := func(name, sa string) config.Config {
		return config.Config{
			Meta: config.Meta{GroupVersionKind: gvk.WorkloadGroup, Name: name, Namespace: "vms"},
			Spec: &istioapi.WorkloadGroup{
				Metadata: &istioapi.WorkloadGroup_ObjectMeta{Labels: map[string]string{"app": name}},
				Template: &istioapi.WorkloadEntry{ServiceAccount: sa},
			},
		}
	}
	s := istioxds.NewFakeDiscoveryServer(t, istioxds.FakeOptions{
		KubernetesObjects: []runtime.Object{namespace("vms")},
		Configs:           []config.Config{group("web", "web"), group("db", "db")},
	})
	mesh := newMeshCA(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mesh.serve(t, s, ln, nil, nil)
	addr, root := ln.Addr().String(), mesh.rootPath
	web := mesh.issue(t, "spiffe://cluster.local/ns/vms/sa/web")

	entry := func(name string) *istioapi.WorkloadEntry {
		c := s.Store().Get(gvk.WorkloadEntry, name, "vms")
		if c == nil {
			return nil
		}
		return c.Spec.(*istioapi.WorkloadEntry)
	}
	stop := register(t, addr, root, web, "web", "vms", "web", "web", "10.0.0.7")
	var we *istioapi.WorkloadEntry
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if we = entry("web-10.0.0.7"); we != nil {
			break
		}
	}
	if we == nil {
		t.Fatal("istiod made no WorkloadEntry web-10.0.0.7 for the registration")
	}
	if we.Address != "10.0.0.7" || we.ServiceAccount != "web" || we.Labels["app"] != "web" || we.Labels["version"] != "v1" ||
		we.Labels["networking.istio.io/tunnel"] != "http" {
		t.Errorf("the WorkloadEntry istiod made: %+v", we)
	}

	// web's certificate through db's WorkloadGroup (service account db): refused, no entry.
	register(t, addr, root, web, "db", "vms", "db", "web", "10.0.0.8")
	time.Sleep(3 * time.Second)
	if e := entry("db-10.0.0.8"); e != nil {
		t.Errorf("web's certificate registered through db's WorkloadGroup: %+v", e)
	}

	stop()
	for deadline := time.Now().Add(20 * time.Second); entry("web-10.0.0.7") != nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the WorkloadEntry outlived its registration by 20 s (grace 1 s)")
		}
	}
}
