package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"
	"istio.io/istio/pkg/security"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
)

// TestRenewsWithItsOwnCertificate: bootstrapped with a token that expires a few seconds after the first
// certificate, and with the token file deleted then, the agent keeps renewing from Istio's CA for three
// certificate lifetimes, each renewal authenticated by the certificate it holds (istiod's client-certificate
// authenticator), and stays ready throughout.
func TestRenewsWithItsOwnCertificate(t *testing.T) {
	d := startIstiod(t)
	const lifetime = 4 * time.Second
	a := startAgent(t, d, lifetime, web)
	ns, sa, _ := identity.ParseIstioID(web)
	path := identity.IstioTokenPath(a.tokenDir, ns, sa)
	if err := os.MkdirAll(strings.TrimSuffix(path, "/"+sa), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(tokenFor(t, d.clusterKey, ns, sa, 3*time.Second)), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "ready", a.src.Ready)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	serials := map[string]bool{a.serial(web): true}
	for end := time.Now().Add(3*lifetime + time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !a.src.Ready() {
			t.Fatalf("not ready %d certificates in, without a token:\n%s", len(serials), a.log)
		}
		serials[a.serial(web)] = true
	}
	// Renewed at half the lifetime: about six renewals in three lifetimes.
	if len(serials) < 5 {
		t.Fatalf("%d certificates over three lifetimes without a token; want the first and at least 4 renewals:\n%s", len(serials), a.log)
	}
	if strings.Contains(a.log.String(), "trying the service-account token") {
		t.Errorf("a renewal fell back to the token:\n%s", a.log)
	}
	t.Logf("%d certificates over three %s lifetimes, the token expired and deleted after the first", len(serials), lifetime)
}

// TestOwnCertificateIsNoEscalation: a caller authenticated by web's certificate gets web's identity from
// Istio's CA and nothing else: a CSR for db is answered with a certificate for web (istiod signs the caller's
// identity, not the CSR's), and asking to impersonate db is refused.
func TestOwnCertificateIsNoEscalation(t *testing.T) {
	d := startIstiod(t)
	a := startAgent(t, d, time.Hour, web)
	a.writeToken(t, web, d.clusterKey)
	eventually(t, 10*time.Second, "ready", a.src.Ready)
	svid, _ := a.src.Snapshot().SVID(web)
	cert := tls.Certificate{PrivateKey: svid.PrivateKey}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(d.rootPEM)
	conn, err := grpc.NewClient(d.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: roots, ServerName: istiodName, Certificates: []tls.Certificate{cert}})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewIstioCertificateServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, err := client.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: csrFor(t, db), ValidityDuration: 3600})
	if err != nil {
		t.Fatalf("a request authenticated by web's certificate: %v", err)
	}
	block, _ := pem.Decode([]byte(resp.GetCertChain()[0]))
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != web.String() {
		t.Errorf("web's certificate asking for db got a certificate for %v; want web's identity only", leaf.URIs)
	}

	meta, _ := structpb.NewStruct(map[string]any{security.ImpersonatedIdentity: db.String()})
	_, err = client.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: csrFor(t, db), ValidityDuration: 3600, Metadata: meta})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("web's certificate impersonating db: %v; want Unauthenticated", err)
	}
}

func csrFor(t *testing.T, id spiffeid.ID) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}
