package meshca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Files of a CA directory. The root certificate has the same name as the trust bundle of the files layout.
const (
	RootCertFile = identity.BundleFile
	RootKeyFile  = "root-key.pem"
)

// RootValidity is the lifetime of a root made by Init.
const RootValidity = 10 * 365 * 24 * time.Hour

// clockSkew is how far back certificates are dated, so that a host whose clock is a little behind accepts them.
const clockSkew = time.Minute

// CA is a loaded mesh root: its certificate, its key and the trust domain it signs for.
type CA struct {
	td      spiffeid.TrustDomain
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
}

// TrustDomain is the trust domain the root signs for, from its URI SAN.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Root is the root certificate.
func (ca *CA) Root() *x509.Certificate { return ca.cert }

// RootPEM is the root certificate in PEM, the trust bundle of the mesh.
func (ca *CA) RootPEM() []byte { return ca.certPEM }

// Init creates a new root for td in dir (created 0700 if missing): dir/root-cert.pem and dir/root-key.pem (mode
// 0600). It refuses to replace either file if it exists: a new root would cut every host off the mesh.
func Init(dir string, td spiffeid.TrustDomain) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("meshca: init: trust domain is required")
	}
	certPath, keyPath := filepath.Join(dir, RootCertFile), filepath.Join(dir, RootKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("meshca: init: %s already exists; refusing to overwrite a mesh root", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("meshca: init: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("meshca: init: %w", err)
	}
	ca, keyPEM, err := newRoot(td, time.Now())
	if err != nil {
		return nil, fmt.Errorf("meshca: init: %w", err)
	}
	if err := createExclusive(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("meshca: init: %w", err)
	}
	if err := createExclusive(certPath, ca.certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("meshca: init: %w", err)
	}
	return ca, nil
}

func newRoot(td spiffeid.TrustDomain, now time.Time) (*CA, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate root key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{td.Name()}, CommonName: "ambient-agent mesh root"},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(RootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse root: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode root key: %w", err)
	}
	ca := &CA{td: td, cert: cert, certPEM: pemEncode("CERTIFICATE", der), key: key}
	return ca, pemEncode("PRIVATE KEY", keyDER), nil
}

// Load reads the root that Init wrote in dir and checks that its key matches and it names a trust domain.
func Load(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, RootCertFile), filepath.Join(dir, RootKeyFile)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("meshca: load: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("meshca: load: %w", err)
	}
	cert, err := parseRootCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("meshca: load %s: %w", certPath, err)
	}
	key, err := parseRootKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("meshca: load %s: %w", keyPath, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("meshca: load: %s does not match %s", keyPath, certPath)
	}
	if len(cert.URIs) != 1 {
		return nil, fmt.Errorf("meshca: load %s: root has %d URI SANs, want one (spiffe://<trust domain>)", certPath, len(cert.URIs))
	}
	td, err := spiffeid.TrustDomainFromURI(cert.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("meshca: load %s: root URI SAN %q: %w", certPath, cert.URIs[0], err)
	}
	return &CA{td: td, cert: cert, certPEM: certPEM, key: key}, nil
}

func parseRootCert(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, errors.New("not a CA certificate")
	}
	return cert, nil
}

func parseRootKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("root key is %T, want ECDSA", k)
	}
	return key, nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}

func pemEncode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// createExclusive writes data to path, which must not exist. The data goes to a temporary file first and is
// then hard-linked into place, so path never holds a partial file and an existing one is never replaced.
func createExclusive(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; refusing to overwrite a mesh root", path)
		}
		return err
	}
	return nil
}

// pemDecode returns the DER of the next CERTIFICATE block of data, skipping other blocks.
func pemDecode(data []byte) (der, rest []byte) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, nil
		}
		if block.Type == "CERTIFICATE" {
			return block.Bytes, data
		}
	}
}
