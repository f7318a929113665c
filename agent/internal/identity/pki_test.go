package identity_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// testCA is a throwaway root for tests; leaf lets a test break a certificate in one precise way.
type testCA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, td string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	trust := spiffeid.RequireTrustDomainFromString(td)
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(t),
		Subject:               pkix.Name{CommonName: "test root " + td},
		URIs:                  []*url.URL{trust.ID().URL()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{td: trust, cert: cert, key: key}
}

func randSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

func (ca *testCA) rootPEM() []byte { return pemCert(ca.cert.Raw) }

func (ca *testCA) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

// issued is a leaf with its key, as parsed objects and as the PEM files of the layout.
type issued struct {
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	chainPEM []byte
	keyPEM   []byte
}

func (i issued) svid(t *testing.T) *x509svid.SVID {
	t.Helper()
	s, err := x509svid.Parse(i.chainPEM, i.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// leaf issues a workload certificate for uris (each a URI SAN), letting edit change the template last.
func (ca *testCA) leaf(t *testing.T, uris []string, edit ...func(*x509.Certificate)) issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := workloadTemplate(randSerial(t))
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	if len(uris) == 0 {
		tmpl.Subject = pkix.Name{CommonName: "no uri"}
	}
	for _, e := range edit {
		e(tmpl)
	}
	cert, err := ca.issue(tmpl, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return issued{cert: cert, key: key, chainPEM: pemCert(cert.Raw), keyPEM: pemKey(t, key)}
}

// workloadTemplate is a workload certificate without SANs, valid from a minute ago for an hour.
func workloadTemplate(serial *big.Int) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
}

// issue signs tmpl for pub. It does not fail the test, so that a server goroutine can use it.
func (ca *testCA) issue(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// workload issues a valid SVID for id.
func (ca *testCA) workload(t *testing.T, id spiffeid.ID) issued {
	t.Helper()
	return ca.leaf(t, []string{id.String()})
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(t *testing.T, key crypto.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
