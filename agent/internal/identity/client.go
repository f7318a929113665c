package identity

import (
	"crypto/tls"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// ClientTLSConfig is the HBONE client's TLS configuration for connections made on behalf of local, to a
// destination whose acceptable identities are expected (the destination workload's identity plus its service's
// subject_alt_names). It presents local's current certificate, sends no SNI and never resumes a session,
// verifies the server's chain against the current bundle and accepts the server only if its SPIFFE ID is one of
// expected (DNS names are never checked), and speaks only TLS 1.3 with AES-GCM and ALPN h2. An empty expected
// accepts no server.
//
// ServerName is left empty: Go sends no SNI then (as ztunnel). The caller sets it only to pick one of several
// workloads that share an address on a host running our agent (docs/identity.md).
func ClientTLSConfig(src Source, local spiffeid.ID, expected []spiffeid.ID) *tls.Config {
	cfg := baseTLSConfig()
	// The standard verification checks host names, which SPIFFE certificates do not carry; the chain and the
	// SPIFFE ID are verified in VerifyPeerCertificate instead.
	cfg.InsecureSkipVerify = true
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		cert, ok := src.Snapshot().Certificate(local)
		if !ok {
			return nil, fmt.Errorf("identity: no certificate for %s", local)
		}
		return cert, nil
	}
	cfg.VerifyPeerCertificate = tlsconfig.VerifyPeerCertificate(bundlesOf{src}, tlsconfig.AuthorizeOneOf(slices.Clone(expected)...))
	return cfg
}

// ProbeTLSConfig is ClientTLSConfig for a connectivity probe: with expected empty it accepts a server with any
// SPIFFE ID whose chain verifies against the trust bundles (the probe reports which), else one of expected.
func ProbeTLSConfig(src Source, local spiffeid.ID, expected []spiffeid.ID) *tls.Config {
	cfg := ClientTLSConfig(src, local, expected)
	if len(expected) == 0 {
		cfg.VerifyPeerCertificate = tlsconfig.VerifyPeerCertificate(bundlesOf{src}, tlsconfig.AuthorizeAny())
	}
	return cfg
}
