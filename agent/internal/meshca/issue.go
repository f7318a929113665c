package meshca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultTTL is the lifetime of an issued workload certificate unless asked otherwise.
const DefaultTTL = 720 * time.Hour

// SVID is an issued workload certificate and its key, in PEM.
type SVID struct {
	ID       spiffeid.ID
	Leaf     *x509.Certificate
	ChainPEM []byte // the leaf; the root signs directly, so there are no intermediates
	KeyPEM   []byte // PKCS#8
}

// Issue signs a new workload X.509 SVID for id with a fresh ECDSA P-256 key. The certificate carries exactly
// one URI SAN (id) and, if given, the addresses in ips as IP SANs (so that a host can prove which addresses
// its workload may claim); it is not a CA, is usable for TLS server and client authentication, and is valid
// from a minute ago for ttl (never beyond the root's own expiry). ips must pass ParseIPSAN's checks.
func (ca *CA) Issue(id spiffeid.ID, ttl time.Duration, ips ...netip.Addr) (*SVID, error) {
	switch {
	case id.IsZero():
		return nil, errors.New("meshca: issue: identity is required")
	case !id.MemberOf(ca.td):
		return nil, fmt.Errorf("meshca: issue %s: the root signs for trust domain %q only", id, ca.td)
	case ttl <= 0:
		return nil, fmt.Errorf("meshca: issue %s: ttl %s is not positive", id, ttl)
	}
	ipAddrs, err := ipSANs(ips)
	if err != nil {
		return nil, fmt.Errorf("meshca: issue %s: %w", id, err)
	}
	now := time.Now()
	if !now.Before(ca.cert.NotAfter) {
		return nil, fmt.Errorf("meshca: issue %s: the root expired at %s", id, ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("meshca: issue %s: generate key: %w", id, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("meshca: issue %s: %w", id, err)
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// An empty subject, as Istio's workload certificates: the identity is the URI SAN alone, and Go marks
		// the SAN extension critical as RFC 5280 asks for a subject-less certificate.
		URIs:                  []*url.URL{id.URL()},
		IPAddresses:           ipAddrs,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("meshca: issue %s: sign: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("meshca: issue %s: %w", id, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("meshca: issue %s: encode key: %w", id, err)
	}
	return &SVID{ID: id, Leaf: leaf, ChainPEM: pemEncode("CERTIFICATE", der), KeyPEM: pemEncode("PRIVATE KEY", keyDER)}, nil
}

// WriteIdentity puts svid into the files layout under out: out/<ns>/<sa>/cert-chain.pem and key.pem (0600),
// each replaced atomically, and out/root-cert.pem holding the root. An existing out/root-cert.pem is kept if it
// already contains the root, and is otherwise an error: it would mix identities of different roots in one
// directory.
func (ca *CA) WriteIdentity(out string, svid *SVID) error {
	ns, sa, ok := identity.ParseIstioID(svid.ID)
	if !ok {
		return fmt.Errorf("meshca: write %s: not of the form spiffe://<td>/ns/<ns>/sa/<sa>", svid.ID)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("meshca: write %s: %w", svid.ID, err)
	}
	if err := ca.writeBundle(out); err != nil {
		return err
	}
	if err := identity.WriteFiles(out, ns, sa, svid.ChainPEM, svid.KeyPEM); err != nil {
		return fmt.Errorf("meshca: write %s: %w", svid.ID, err)
	}
	return matchOwner(out, identity.BundlePath(out), filepath.Join(out, ns), filepath.Join(out, ns, sa),
		identity.ChainPath(out, ns, sa), identity.KeyPath(out, ns, sa))
}

// matchOwner gives paths the owner of dir. The packaged service runs as its own
// user and owns its identity directory: a key written there by root must stay
// readable by that user, and by no one else (the key is 0600).
func matchOwner(dir string, paths ...string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("meshca: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) == os.Geteuid() && int(st.Gid) == os.Getegid() {
		return nil
	}
	for _, p := range paths {
		if err := os.Lchown(p, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("meshca: give %s to the owner of %s (uid %d): %w", p, dir, st.Uid, err)
		}
	}
	return nil
}

func (ca *CA) writeBundle(out string) error {
	path := identity.BundlePath(out)
	existing, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := identity.WriteFileAtomic(path, ca.certPEM, 0o644); err != nil {
			return fmt.Errorf("meshca: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("meshca: %w", err)
	}
	if !bundleHas(existing, ca.cert) {
		return fmt.Errorf("meshca: %s exists and does not contain this CA's root (%s); "+
			"use another output directory, or add the root to that bundle first", path, ca.cert.Subject)
	}
	return nil
}

// bundleHas reports whether the PEM bundle holds root. Anything unparsable in it counts as not holding it.
func bundleHas(bundle []byte, root *x509.Certificate) bool {
	for {
		block, rest := pemDecode(bundle)
		if block == nil {
			return false
		}
		if bytes.Equal(block, root.Raw) {
			return true
		}
		bundle = rest
	}
}
