package identity

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// newSVID checks that certs and key form a usable X.509 SVID for want, in want's trust domain, valid at now and
// chaining to a root of bundles. The error says what is wrong, not where; callers add the file and identity.
func newSVID(want spiffeid.ID, certs []*x509.Certificate, key crypto.Signer, bundles x509bundle.Source, now time.Time) (*x509svid.SVID, error) {
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	leaf := certs[0]
	id, err := leafID(leaf)
	if err != nil {
		return nil, err
	}
	if id.TrustDomain() != want.TrustDomain() {
		return nil, fmt.Errorf("certificate is for %s, of trust domain %q, not %q", id, id.TrustDomain(), want.TrustDomain())
	}
	if id != want {
		return nil, fmt.Errorf("certificate is for %s, not %s", id, want)
	}
	if err := checkValidity(leaf, now); err != nil {
		return nil, err
	}
	if key == nil {
		return nil, errors.New("no private key")
	}
	if !keyMatches(key, leaf) {
		return nil, errors.New("private key does not match the certificate")
	}
	if _, _, err := x509svid.Verify(certs, bundles, x509svid.WithTime(now)); err != nil {
		return nil, fmt.Errorf("certificate does not verify against the trust bundle: %w", err)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}

// leafID returns the SPIFFE ID of a leaf certificate, which must carry exactly one URI SAN, a SPIFFE ID.
func leafID(leaf *x509.Certificate) (spiffeid.ID, error) {
	switch len(leaf.URIs) {
	case 0:
		return spiffeid.ID{}, errors.New("certificate has no URI SAN (want one SPIFFE ID)")
	case 1:
	default:
		return spiffeid.ID{}, fmt.Errorf("certificate has %d URI SANs (want exactly one SPIFFE ID)", len(leaf.URIs))
	}
	id, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("certificate URI SAN %q is not a SPIFFE ID: %w", leaf.URIs[0], err)
	}
	return id, nil
}

func checkValidity(c *x509.Certificate, now time.Time) error {
	if now.Before(c.NotBefore) {
		return fmt.Errorf("certificate is not valid before %s", c.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("certificate expired at %s", c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// newBundle checks a trust bundle for td: only CA certificates, at least one of them valid at now. An expired
// root next to valid ones is kept (harmless, and usual in the middle of a root rotation).
func newBundle(td spiffeid.TrustDomain, roots []*x509.Certificate, now time.Time) (*x509bundle.Bundle, error) {
	if len(roots) == 0 {
		return nil, errors.New("no root certificate")
	}
	var validityErr error
	valid := 0
	for i, r := range roots {
		if !r.BasicConstraintsValid || !r.IsCA {
			return nil, fmt.Errorf("certificate %d (%s) is not a CA certificate", i+1, r.Subject)
		}
		if err := checkValidity(r, now); err != nil {
			validityErr = fmt.Errorf("certificate %d (%s): %w", i+1, r.Subject, err)
			continue
		}
		valid++
	}
	if valid == 0 {
		return nil, fmt.Errorf("no root certificate is currently valid: %w", validityErr)
	}
	return x509bundle.FromX509Authorities(td, roots), nil
}
