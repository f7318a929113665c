package identity

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ALPN is the only application protocol HBONE speaks.
const ALPN = "h2"

// baseTLSConfig holds what both sides share (spec/hbone.md "TLS"): TLS 1.3 only, ALPN h2, no session resumption,
// and a check of the negotiated parameters. Go does not let a program choose its TLS 1.3 cipher suites, so the
// AES-GCM-only rule is enforced after negotiation: a peer that insists on ChaCha20 fails the handshake.
func baseTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		NextProtos:             []string{ALPN},
		SessionTicketsDisabled: true,
		VerifyConnection:       checkNegotiated,
	}
}

// checkNegotiated refuses a connection whose negotiated version, cipher suite or protocol is not HBONE's.
func checkNegotiated(cs tls.ConnectionState) error {
	if cs.Version != tls.VersionTLS13 {
		return fmt.Errorf("identity: negotiated %s, want TLS 1.3", tls.VersionName(cs.Version))
	}
	switch cs.CipherSuite {
	case tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384:
	default:
		return fmt.Errorf("identity: negotiated cipher suite %s, want AES-GCM", tls.CipherSuiteName(cs.CipherSuite))
	}
	if cs.NegotiatedProtocol != ALPN {
		return fmt.Errorf("identity: negotiated ALPN %q, want %q", cs.NegotiatedProtocol, ALPN)
	}
	return nil
}

// bundlesOf reads the bundles of src's current Snapshot at each call, so verification follows rotation.
type bundlesOf struct{ src Source }

func (b bundlesOf) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return b.src.Snapshot().GetX509BundleForTrustDomain(td)
}

// PeerID returns the SPIFFE ID of the peer of a connection set up with ServerTLSConfig or ClientTLSConfig,
// whose certificate has been verified by then.
func PeerID(cs tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("identity: peer presented no certificate")
	}
	id, err := leafID(cs.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: peer: %w", err)
	}
	return id, nil
}
