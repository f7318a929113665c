package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"
)

// istioRequestTimeout bounds one CreateCertificate call, connecting included.
const istioRequestTimeout = 30 * time.Second

// renewalMargin is how long a held certificate must still be valid to authenticate its own renewal: one about
// to expire could expire during the handshake.
const renewalMargin = time.Second

// request asks istiod for a certificate for id with a fresh key, and validates the answer. It is authenticated by
// id's current certificate when one is held that is valid for renewalMargin more, else (or when istiod refuses it)
// by id's service-account token.
func (s *istioSource) request(ctx context.Context, client pb.IstioCertificateServiceClient, id spiffeid.ID) (issuedSVID, error) {
	var certErr error
	if cert := s.renewable(id); cert != nil {
		r, err := s.requestWithCertificate(ctx, id, cert)
		if err == nil || ctx.Err() != nil {
			return r, err
		}
		certErr = err
		s.log.Warn("identity: renewal with the current certificate failed; trying the service-account token",
			"identity", id.String(), "err", err)
	}
	r, err := s.requestWithToken(ctx, client, id)
	if err != nil && certErr != nil {
		return issuedSVID{}, fmt.Errorf("%w; with the current certificate: %v", err, certErr)
	}
	return r, err
}

// renewable is id's held certificate when it can authenticate a renewal: valid now and for renewalMargin more,
// over TLS (a plaintext connection presents no certificate).
func (s *istioSource) renewable(id spiffeid.ID) *tls.Certificate {
	if s.opts.Plaintext {
		return nil
	}
	h, ok := s.Snapshot().svids[id]
	if !ok || h.cert == nil {
		return nil
	}
	now, leaf := s.now(), h.svid.Certificates[0]
	if checkValidity(leaf, now) != nil || leaf.NotAfter.Before(now.Add(renewalMargin)) {
		return nil
	}
	return h.cert
}

// requestWithCertificate asks for id's next certificate on a connection of its own that presents cert, id's
// current one: istiod authenticates the caller as id by it. The connection is closed after the request, so a
// renewal always presents the certificate held at its time.
func (s *istioSource) requestWithCertificate(ctx context.Context, id spiffeid.ID, cert *tls.Certificate) (issuedSVID, error) {
	creds := credentials.NewTLS(&tls.Config{RootCAs: s.rootCAs, ServerName: s.opts.serverName(), MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{*cert}})
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if s.opts.Dial != nil {
		opts = append(opts, grpc.WithContextDialer(s.opts.Dial))
	}
	conn, err := grpc.NewClient(s.opts.Address, opts...)
	if err != nil {
		return issuedSVID{}, err
	}
	defer conn.Close()
	var md []string
	if s.opts.ClusterID != "" {
		md = append(md, "clusterid", s.opts.ClusterID)
	}
	return s.create(metadata.AppendToOutgoingContext(ctx, md...), pb.NewIstioCertificateServiceClient(conn), id, "")
}

// requestWithToken asks for id's certificate authenticated by id's service-account token.
func (s *istioSource) requestWithToken(ctx context.Context, client pb.IstioCertificateServiceClient, id spiffeid.ID) (issuedSVID, error) {
	ns, sa, _ := ParseIstioID(id)
	tokenPath := IstioTokenPath(s.opts.TokenDir, ns, sa)
	token, err := readToken(tokenPath)
	if err != nil {
		return issuedSVID{}, err
	}
	md := []string{"authorization", "Bearer " + token}
	if s.opts.ClusterID != "" {
		md = append(md, "clusterid", s.opts.ClusterID)
	}
	return s.create(metadata.AppendToOutgoingContext(ctx, md...), client, id, tokenPath)
}

// create sends one CreateCertificate for id with a fresh key and validates the answer; tokenPath names the token
// that authenticated it, if one did, for the error.
func (s *istioSource) create(ctx context.Context, client pb.IstioCertificateServiceClient, id spiffeid.ID, tokenPath string) (issuedSVID, error) {
	key, csr, err := newCSR(id)
	if err != nil {
		return issuedSVID{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, istioRequestTimeout)
	defer cancel()
	resp, err := client.CreateCertificate(ctx, &pb.IstioCertificateRequest{
		Csr:              string(csr),
		ValidityDuration: int64(s.opts.Validity / time.Second),
		// No impersonation: istiod lets only Kubernetes node agents ask for another identity than their
		// token's, so each identity comes with its own token.
		Metadata: &structpb.Struct{},
	})
	if err != nil {
		return issuedSVID{}, s.istiodError(err, tokenPath)
	}
	r, err := s.accept(id, key, resp.GetCertChain())
	if err != nil {
		return issuedSVID{}, fmt.Errorf("refused istiod's answer: %w", err)
	}
	return r, nil
}

// readToken reads a service-account token, without the newline a file usually ends with.
func readToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("service-account token: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("service-account token %s is empty", path)
	}
	return token, nil
}

// newCSR makes a fresh ECDSA P-256 key and a certificate request for id, signed with SHA-256, whose only
// subject alternative name is the URI id.
func newCSR(id spiffeid.ID) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	tmpl := &x509.CertificateRequest{SignatureAlgorithm: x509.ECDSAWithSHA256, URIs: []*url.URL{id.URL()}}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate request: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// istiodError says what istiod answered: its gRPC status code and message.
func (s *istioSource) istiodError(err error, tokenPath string) error {
	st := status.Convert(err)
	msg := fmt.Sprintf("istiod %s answered %s: %s", s.opts.Address, st.Code(), st.Message())
	switch st.Code() {
	case codes.Unauthenticated, codes.PermissionDenied:
		if tokenPath == "" {
			return fmt.Errorf("%s (the current certificate was refused)", msg)
		}
		return fmt.Errorf("%s (is %s a current service-account token of this identity, with audience istio-ca?)", msg, tokenPath)
	}
	return errors.New(msg)
}

// accept validates istiod's answer, [leaf, intermediates..., root(s)], like any other source's certificates:
// the leaf must be for id, valid now, of key, and chain to the roots. It trusts the roots of the answer next to
// RootCert's: the answer came over the connection RootCert verified.
func (s *istioSource) accept(id spiffeid.ID, key *ecdsa.PrivateKey, chain []string) (issuedSVID, error) {
	if len(chain) < 2 {
		return issuedSVID{}, fmt.Errorf("%d certificates; want the certificate, any intermediates, and the root", len(chain))
	}
	now := s.now()
	roots, err := parseCertificates([]byte(chain[len(chain)-1]))
	if err != nil {
		return issuedSVID{}, fmt.Errorf("root: %w", err)
	}
	if _, err := newBundle(s.td, roots, now); err != nil {
		return issuedSVID{}, fmt.Errorf("root: %w", err)
	}
	certs, err := parseCertificates([]byte(strings.Join(chain[:len(chain)-1], "\n")))
	if err != nil {
		return issuedSVID{}, fmt.Errorf("certificate chain: %w", err)
	}
	// A plugged-in CA's chain often ends with the root again: a peer has it already.
	certs = append(certs[:1], withoutRoots(certs[1:], roots)...)
	trust := x509bundle.FromX509Authorities(s.td, append(append([]*x509.Certificate(nil), s.trusted...), roots...))
	svid, err := newSVID(id, certs, key, x509bundle.NewSet(trust), now)
	if err != nil {
		return issuedSVID{}, err
	}
	return issuedSVID{svid: svid, roots: roots}, nil
}

func withoutRoots(certs, roots []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range certs {
		if !slices.ContainsFunc(roots, c.Equal) {
			out = append(out, c)
		}
	}
	return out
}
