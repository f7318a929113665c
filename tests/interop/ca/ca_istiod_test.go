package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/api/security/v1beta1"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/security"
	pkica "istio.io/istio/security/pkg/pki/ca"
	caserver "istio.io/istio/security/pkg/server/ca"
	"istio.io/istio/security/pkg/server/ca/authenticate"
)

const (
	// istiodName is the name in istiod's serving certificate.
	istiodName = "istiod.istio-system.svc"
	// tokenIssuer is the issuer of the test cluster's service-account tokens.
	tokenIssuer = "https://kubernetes.default.svc.cluster.local"
	// tokenAudience is the audience istiod requires of the tokens it accepts.
	tokenAudience = "istio-ca"
	trustDomain   = "cluster.local"
)

// istiod is Istio's CA server, as istiod runs it, on 127.0.0.1 over TLS with a serving certificate from its
// own CA, accepting the service-account tokens that clusterKey signs.
type istiod struct {
	addr       string
	rootPEM    []byte
	clusterKey *rsa.PrivateKey
}

func startIstiod(t *testing.T) *istiod {
	t.Helper()
	d := &istiod{clusterKey: rsaKey(t)}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jwksOf(&d.clusterKey.PublicKey))
	}))
	t.Cleanup(jwks.Close)

	// As istiod's self-signed CA (pilot/pkg/bootstrap): organisation = trust domain, RSA 2048.
	opts, err := pkica.NewSelfSignedDebugIstioCAOptions("", 24*time.Hour, 24*time.Hour, 48*time.Hour, trustDomain, 2048)
	if err != nil {
		t.Fatalf("istio CA options: %v", err)
	}
	istioCA, err := pkica.NewIstioCA(opts)
	if err != nil {
		t.Fatalf("istio CA: %v", err)
	}
	d.rootPEM = istioCA.GetCAKeyCertBundle().GetRootCertPem()
	certPEM, keyPEM, err := istioCA.GenKeyCert([]string{istiodName}, 24*time.Hour, false)
	if err != nil {
		t.Fatalf("istiod serving certificate: %v", err)
	}
	serving, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}

	authn, err := authenticate.NewJwtAuthenticator(&v1beta1.JWTRule{
		Issuer: tokenIssuer, JwksUri: jwks.URL, Audiences: []string{tokenAudience},
	}, fixedMesh{&meshconfig.MeshConfig{TrustDomain: trustDomain}})
	if err != nil {
		t.Fatalf("JWT authenticator: %v", err)
	}
	// As istiod (pilot/pkg/bootstrap): the client-certificate authenticator first, then the JWT one; a client
	// certificate is verified against the mesh's root when one is given.
	server, err := caserver.New(istioCA, 24*time.Hour, []security.Authenticator{&authenticate.ClientCertAuthenticator{}, authn}, nil)
	if err != nil {
		t.Fatalf("CA server: %v", err)
	}
	clientCAs := x509.NewCertPool()
	clientCAs.AppendCertsFromPEM(d.rootPEM)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serving},
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: clientCAs})))
	server.Register(gs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("loopback listener: %v", err) // never skipped: CI must not pass without running this
	}
	d.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(ln)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})
	return d
}

// fixedMesh is a mesh config that never changes, for the authenticator's trust domain.
type fixedMesh struct{ cfg *meshconfig.MeshConfig }

func (m fixedMesh) Mesh() *meshconfig.MeshConfig { return m.cfg }

func (fixedMesh) AddMeshHandler(func()) *mesh.WatcherHandlerRegistration {
	return mesh.NewWatcherHandlerRegistration(func() {})
}

func (fixedMesh) DeleteMeshHandler(*mesh.WatcherHandlerRegistration) {}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// token is a Kubernetes service-account token for ns/sa, as the cluster would project it for istiod (RS256,
// audience istio-ca), signed with key.
func token(t *testing.T, key *rsa.PrivateKey, ns, sa string) string {
	t.Helper()
	return tokenFor(t, key, ns, sa, time.Hour)
}

// tokenFor is token, valid for ttl.
func tokenFor(t *testing.T, key *rsa.PrivateKey, ns, sa string, ttl time.Duration) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "cluster"})
	claims, _ := json.Marshal(map[string]any{
		"iss": tokenIssuer, "sub": "system:serviceaccount:" + ns + ":" + sa, "aud": []string{tokenAudience},
		"iat": time.Now().Unix(), "exp": time.Now().Add(ttl).Unix(),
	})
	signed := b64(header) + "." + b64(claims)
	digest := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + b64(sig)
}

// jwksOf is the JSON Web Key Set of the cluster's token signing key.
func jwksOf(pub *rsa.PublicKey) map[string]any {
	b64 := base64.RawURLEncoding.EncodeToString
	return map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "cluster",
		"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes()),
	}}}
}
