package identity_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
)

// istiodName is the name in istiod's serving certificate, as in a cluster.
const istiodName = "istiod.istio-system.svc"

// fakeIstiod is a CA server with istiod's gRPC service, over real TLS on 127.0.0.1. Like istiod, it issues for
// the identity its bearer token stands for, whatever the CSR asks, and backdates certificates by two minutes.
type fakeIstiod struct {
	pb.UnimplementedIstioCertificateServiceServer
	ca       *testCA // signs the workload certificates and istiod's serving certificate
	addr     string
	rootPath string // the mesh root, for IstioOptions.RootCert

	mu       sync.Mutex
	tokens   map[string]spiffeid.ID // a token authenticates this identity
	refusal  *status.Status         // when set, every request is refused with it
	chain    func(leaf *x509.Certificate) []string
	requests []fakeRequest
}

// fakeRequest is what the fake saw of one request.
type fakeRequest struct {
	token, clusterID string
	csr              *x509.CertificateRequest
	validity         int64
}

// startFakeIstiod serves on 127.0.0.1; plaintext leaves TLS out, as IstioOptions.Plaintext does.
func startFakeIstiod(t *testing.T, plaintext bool) *fakeIstiod {
	t.Helper()
	f := &fakeIstiod{ca: newTestCA(t, "cluster.local"), tokens: map[string]spiffeid.ID{}}
	f.rootPath = filepath.Join(t.TempDir(), "root-cert.pem")
	writeFile(t, f.rootPath, f.ca.rootPEM())
	var opts []grpc.ServerOption
	if !plaintext {
		serving := f.ca.leaf(t, nil, func(c *x509.Certificate) {
			c.Subject.CommonName = "istiod"
			c.DNSNames = []string{istiodName}
		})
		cert := tls.Certificate{Certificate: [][]byte{serving.cert.Raw}, PrivateKey: serving.key}
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	}
	srv := grpc.NewServer(opts...)
	pb.RegisterIstioCertificateServiceServer(srv, f)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("loopback listener: %v", err)
	}
	f.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return f
}

// options configure an istio source for ids that talks to f, with tokens in tokenDir.
func (f *fakeIstiod) options(log *logBuffer, tokenDir string, ids ...spiffeid.ID) identity.Options {
	o := identity.Options{Source: identity.SourceIstio, TrustDomain: tdLocal, Identities: ids, Istio: identity.IstioOptions{
		Address: f.addr, ServerName: istiodName, RootCert: f.rootPath, TokenDir: tokenDir, ClusterID: "test-cluster",
	}}
	if log != nil {
		o.Logger = log.logger()
	}
	return o
}

// grant makes token authenticate id, and writes it as id's token file under dir.
func (f *fakeIstiod) grant(t *testing.T, dir string, id spiffeid.ID, token string) {
	t.Helper()
	f.mu.Lock()
	f.tokens[token] = id
	f.mu.Unlock()
	ns, sa, _ := identity.ParseIstioID(id)
	writeFile(t, identity.IstioTokenPath(dir, ns, sa), []byte(token+"\n"))
}

// refuse makes every request fail with code and msg; code OK answers again.
func (f *fakeIstiod) refuse(code codes.Code, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refusal = nil
	if code != codes.OK {
		f.refusal = status.New(code, msg)
	}
}

// answerWith replaces the chain of the answer: [leaf PEM, root PEM] by default.
func (f *fakeIstiod) answerWith(chain func(leaf *x509.Certificate) []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.chain = chain
}

func (f *fakeIstiod) seen() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRequest(nil), f.requests...)
}

// CreateCertificate implements pb.IstioCertificateServiceServer.
func (f *fakeIstiod) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	seen := fakeRequest{validity: req.GetValidityDuration()}
	if v := md.Get("authorization"); len(v) == 1 {
		seen.token, _ = strings.CutPrefix(v[0], "Bearer ")
	}
	if v := md.Get("clusterid"); len(v) == 1 {
		seen.clusterID = v[0]
	}
	block, _ := pem.Decode([]byte(req.GetCsr()))
	if block != nil {
		seen.csr, _ = x509.ParseCertificateRequest(block.Bytes)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, seen)
	id, known := f.tokens[seen.token]
	switch {
	case f.refusal != nil:
		return nil, f.refusal.Err()
	case !known:
		return nil, status.Error(codes.Unauthenticated, "request authenticate failure")
	case seen.csr == nil || seen.csr.CheckSignature() != nil:
		return nil, status.Error(codes.InvalidArgument, "CSR signing error (bad CSR)")
	}
	leaf, err := f.sign(seen.csr, id, time.Duration(seen.validity)*time.Second)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	chain := []string{string(pemCert(leaf.Raw)), string(f.ca.rootPEM())}
	if f.chain != nil {
		chain = f.chain(leaf)
	}
	return &pb.IstioCertificateResponse{CertChain: chain}, nil
}

func (f *fakeIstiod) sign(csr *x509.CertificateRequest, id spiffeid.ID, validity time.Duration) (*x509.Certificate, error) {
	if validity <= 0 {
		return nil, errors.New("no validity")
	}
	now := time.Now()
	tmpl := workloadTemplate(big.NewInt(now.UnixNano()))
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-2*time.Minute), now.Add(validity)
	tmpl.URIs = []*url.URL{id.URL()}
	return f.ca.issue(tmpl, csr.PublicKey)
}
