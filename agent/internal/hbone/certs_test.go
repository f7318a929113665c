package hbone

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// testCA is a throwaway ECDSA P-256 CA issuing SPIFFE leaf certificates, as the mesh CA would.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"hbone test CA"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf issues a certificate whose only URI SAN is id.
func (ca *testCA) leaf(t testing.TB, id string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// verifySPIFFE checks a peer chain against the CA and returns the leaf's SPIFFE ID (what identity's
// configurations do, minus rotation and bundles).
func (ca *testCA) verifySPIFFE(raw [][]byte, usage x509.ExtKeyUsage) (spiffeid.ID, error) {
	if len(raw) == 0 {
		return spiffeid.ID{}, errors.New("no certificate")
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return spiffeid.ID{}, err
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: ca.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return spiffeid.ID{}, err
	}
	if len(certs[0].URIs) != 1 {
		return spiffeid.ID{}, errors.New("want exactly one URI SAN")
	}
	return spiffeid.FromURI(certs[0].URIs[0])
}

// serverTLS is what identity.ServerTLSConfig gives: TLS 1.3, AES-GCM, h2, client certificate required, verified,
// and in our trust domain.
func (ca *testCA) serverTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2"},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, err := ca.verifySPIFFE(raw, x509.ExtKeyUsageClientAuth)
			if err != nil {
				return err
			}
			if id.TrustDomain().Name() != "cluster.local" {
				return fmt.Errorf("client %s is not in our trust domain", id)
			}
			return nil
		},
	}
}

// clientTLS is what identity.ClientTLSConfig gives: no SNI, no resumption, the server's SPIFFE ID must be one of
// expected.
func (ca *testCA) clientTLS(cert tls.Certificate, expected ...string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		NextProtos:         []string{"h2"},
		InsecureSkipVerify: true, // verified below, by SPIFFE ID rather than host name
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, err := ca.verifySPIFFE(raw, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			for _, e := range expected {
				if id.String() == e {
					return nil
				}
			}
			return fmt.Errorf("server %s not expected", id)
		},
	}
}

const (
	clientID = "spiffe://cluster.local/ns/default/sa/client"
	serverID = "spiffe://cluster.local/ns/default/sa/server"
)
