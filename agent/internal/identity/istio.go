package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	pb "istio.io/api/security/v1alpha1"
)

// DefaultIstioValidity is the certificate lifetime the istio source asks for, as Istio's own clients do.
const DefaultIstioValidity = 24 * time.Hour

// minRenewInterval keeps a certificate that is issued already half spent (Istio clamps a leaf to its signing
// certificate's expiry) from making the source ask again in a tight loop.
const minRenewInterval = time.Second

// IstioOptions configure the istio source: the client of istiod's CA (spec/identity.md, source 4).
type IstioOptions struct {
	// Address is istiod's CA, host:port: istiod's port 15012, directly or through an east-west gateway.
	Address string
	// ServerName is the name istiod's certificate is verified for; "" means the host of Address. istiod's own
	// certificate names istiod.istio-system.svc, so an address by IP or through a gateway needs it.
	ServerName string
	// RootCert is a PEM file of the root(s) that verify istiod (the mesh's root-cert.pem). Its roots are also in
	// the trust bundle that verifies peers. New reads it once. Required unless Plaintext.
	RootCert string
	// TokenDir holds the Kubernetes service-account token (a JWT) of each identity, in
	// IstioTokenPath(TokenDir, namespace, service account). It is read again for every request, so a token
	// refreshed on disk is used by the next one.
	TokenDir string
	// ClusterID is the cluster the tokens belong to, as istiod names it (Istio's default is "Kubernetes"), sent
	// as the clusterid metadata; "" sends none and istiod checks the tokens against its own cluster.
	ClusterID string
	// Plaintext talks to istiod without TLS: for tests only. Nothing verifies istiod and the tokens travel in
	// clear; the trust bundle is then RootCert's roots, if set, and the roots istiod sends.
	Plaintext bool
	// Validity is the certificate lifetime to ask for, in whole seconds; zero means DefaultIstioValidity.
	Validity time.Duration
	// Dial, when set, opens the connection to istiod (the agent's marked dialer, so that capture never sends
	// the agent's own connection back into its outbound proxy); nil: gRPC's own dialer.
	Dial func(ctx context.Context, address string) (net.Conn, error)
}

// IstioTokenPath is where the istio source reads the service-account token of namespace ns, service account sa.
func IstioTokenPath(dir, ns, sa string) string { return filepath.Join(dir, ns, sa) }

func (o IstioOptions) validate() []error {
	var errs []error
	if host, port, err := net.SplitHostPort(o.Address); err != nil || host == "" || port == "" {
		errs = append(errs, fmt.Errorf("istio source: address %q is not host:port", o.Address))
	}
	switch {
	case o.RootCert == "" && !o.Plaintext:
		errs = append(errs, errors.New("istio source: root certificate is required to verify istiod"))
	case o.RootCert != "" && !filepath.IsAbs(o.RootCert):
		errs = append(errs, fmt.Errorf("istio source: root certificate %q is not an absolute path", o.RootCert))
	}
	if !filepath.IsAbs(o.TokenDir) {
		errs = append(errs, fmt.Errorf("istio source: token dir %q is not an absolute path", o.TokenDir))
	}
	if o.Validity < 0 || o.Validity%time.Second != 0 {
		errs = append(errs, fmt.Errorf("istio source: validity %s is not a positive whole number of seconds", o.Validity))
	}
	return errs
}

// serverName is the name istiod's certificate must carry.
func (o IstioOptions) serverName() string {
	if o.ServerName != "" {
		return o.ServerName
	}
	host, _, _ := net.SplitHostPort(o.Address)
	return host
}

// istioSource asks istiod's CA for a certificate per wanted identity and renews each at half its lifetime. A
// renewal is authenticated by the identity's current certificate, presented as the TLS client certificate (istiod's
// client-certificate authenticator, as Istio's own VM agent renews); the identity's service-account token is needed
// only for the first certificate, or when none is held that is still valid, or when istiod refuses the certificate.
// istiod issues for the caller's identity only, whichever way it authenticated.
// Each identity has its own renewal loop, so a refused token holds back only its own identity.
type istioSource struct {
	*store
	opts    IstioOptions
	trusted []*x509.Certificate // RootCert's roots: they verify istiod, and peers
	creds   credentials.TransportCredentials
	rootCAs *x509.CertPool // trusted, to verify istiod on the connections that present a held certificate
	log     *slog.Logger

	mu     sync.Mutex                          // serialises building and publishing Snapshots
	issued map[spiffeid.ID][]*x509.Certificate // the roots istiod sent with each held certificate; guarded by mu
}

func newIstioSource(opts IstioOptions, td spiffeid.TrustDomain, want []spiffeid.ID, log *slog.Logger, now func() time.Time) (*istioSource, error) {
	if opts.Validity == 0 {
		opts.Validity = DefaultIstioValidity
	}
	s := &istioSource{store: newStore(td, want, now), opts: opts, log: log, issued: map[spiffeid.ID][]*x509.Certificate{}}
	if opts.RootCert != "" {
		roots, err := loadRoots(td, opts.RootCert, now())
		if err != nil {
			return nil, fmt.Errorf("identity: istio root certificate %s: %w", opts.RootCert, err)
		}
		s.trusted = roots
		s.publish(&Snapshot{svids: map[spiffeid.ID]*heldSVID{}, bundles: x509bundle.NewSet(s.bundle())})
	}
	s.creds = insecure.NewCredentials()
	if !opts.Plaintext {
		pool := x509.NewCertPool()
		for _, r := range s.trusted {
			pool.AddCert(r)
		}
		s.rootCAs = pool
		s.creds = credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: opts.serverName(), MinVersion: tls.VersionTLS12})
	}
	return s, nil
}

func loadRoots(td spiffeid.TrustDomain, path string, now time.Time) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	roots, err := parseCertificates(data)
	if err != nil {
		return nil, err
	}
	if _, err := newBundle(td, roots, now); err != nil {
		return nil, err
	}
	return roots, nil
}

// Run keeps a certificate for every wanted identity until ctx is done. Failures (istiod unreachable, a token
// refused, an answer that does not validate) are logged and retried with backoff; a held certificate stays in
// use meanwhile, until it expires.
func (s *istioSource) Run(ctx context.Context) error {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(s.creds), grpcConnectParams()}
	if s.opts.Dial != nil {
		opts = append(opts, grpc.WithContextDialer(s.opts.Dial))
	}
	conn, err := grpc.NewClient(s.opts.Address, opts...)
	if err != nil {
		return fmt.Errorf("identity: istiod %s: %w", s.opts.Address, err)
	}
	defer conn.Close()
	client := pb.NewIstioCertificateServiceClient(conn)
	s.log.Info("identity: requesting certificates from istiod", "address", s.opts.Address,
		"serverName", s.opts.serverName(), "plaintext", s.opts.Plaintext, "identities", len(s.want))
	var wg sync.WaitGroup
	for _, id := range s.want {
		wg.Go(func() { s.keep(ctx, client, id) })
	}
	wg.Wait()
	<-ctx.Done() // already done, unless there is no identity to keep
	return nil
}

// keep holds a certificate for id: it asks for one, renews it at half its lifetime, and retries a failure with
// backoff.
func (s *istioSource) keep(ctx context.Context, client pb.IstioCertificateServiceClient, id spiffeid.ID) {
	retry := newBackoff(backoffMin, backoffMax)
	for {
		renewAt, err := s.renew(ctx, client, id)
		if ctx.Err() != nil {
			return
		}
		wait := renewAt.Sub(s.now())
		if err != nil {
			wait = retry.Next()
			s.reportFailure(id, err, wait)
		} else {
			retry.Reset()
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// renew gets a new certificate for id and holds it. It returns when to renew again.
func (s *istioSource) renew(ctx context.Context, client pb.IstioCertificateServiceClient, id spiffeid.ID) (time.Time, error) {
	received, err := s.request(ctx, client, id)
	if err != nil {
		return time.Time{}, fmt.Errorf("identity: certificate for %s: %w", id, err)
	}
	s.hold(id, received)
	leaf := received.svid.Certificates[0]
	at := renewalTime(leaf, s.now())
	s.log.Info("identity: received certificate from istiod", "identity", id.String(),
		"serial", leaf.SerialNumber.Text(16), "notAfter", leaf.NotAfter, "renewAt", at)
	return at, nil
}

// renewalTime is half-way through the certificate's lifetime, counted from when it arrived: Istio backdates
// NotBefore by two minutes for clock skew, which would otherwise bring a short certificate's renewal forward
// to before it arrived.
func renewalTime(leaf *x509.Certificate, received time.Time) time.Time {
	start := leaf.NotBefore
	if received.After(start) {
		start = received
	}
	at := start.Add(leaf.NotAfter.Sub(start) / 2)
	if earliest := received.Add(minRenewInterval); at.Before(earliest) {
		return earliest
	}
	return at
}

// hold makes r id's certificate, and the roots that came with it part of the trust bundle.
func (s *istioSource) hold(id spiffeid.ID, r issuedSVID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wasReady := s.Ready()
	s.issued[id] = r.roots
	next := &Snapshot{svids: maps.Clone(s.Snapshot().svids), bundles: x509bundle.NewSet(s.bundle())}
	next.svids[id] = newHeldSVID(r.svid)
	s.publish(next)
	if !wasReady && s.Ready() {
		s.log.Info("identity: every local identity has a certificate from istiod")
	}
}

// bundle is the trust bundle: RootCert's roots and the roots istiod sent with the held certificates (they
// differ while istiod's root rotates). The caller holds mu, or is New.
func (s *istioSource) bundle() *x509bundle.Bundle {
	b := x509bundle.New(s.td)
	for _, r := range s.trusted {
		b.AddX509Authority(r)
	}
	for _, id := range s.want {
		for _, r := range s.issued[id] {
			b.AddX509Authority(r)
		}
	}
	return b
}

// reportFailure logs a failed request, saying whether the identity still has a usable certificate.
func (s *istioSource) reportFailure(id spiffeid.ID, err error, retryIn time.Duration) {
	retryIn = retryIn.Round(time.Millisecond)
	if h, ok := s.Snapshot().svids[id]; ok && checkValidity(h.svid.Certificates[0], s.now()) == nil {
		s.log.Error("identity: renewal from istiod failed; the current certificate stays in use until it expires",
			"identity", id.String(), "err", err, "notAfter", h.svid.Certificates[0].NotAfter, "retryIn", retryIn)
		return
	}
	s.log.Error("identity: no certificate from istiod; not ready until it has one", "identity", id.String(),
		"err", err, "retryIn", retryIn)
}

// issuedSVID is a validated answer of istiod: the SVID and the roots that came with it.
type issuedSVID struct {
	svid  *x509svid.SVID
	roots []*x509.Certificate
}
