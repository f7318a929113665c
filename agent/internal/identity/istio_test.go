package identity_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
)

// eventually polls cond until it holds, failing the test after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newIstioSource(t *testing.T, opts identity.Options) identity.Source {
	t.Helper()
	src, err := identity.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// TestIstioSourceGetsCertificates: one request per identity, each with that identity's token, a fresh P-256 key
// and a CSR naming only the identity; the certificates are held, usable for HBONE, and the root is trusted.
func TestIstioSourceGetsCertificates(t *testing.T) {
	f := startFakeIstiod(t, false)
	tokens := t.TempDir()
	f.grant(t, tokens, idA, "token-web")
	f.grant(t, tokens, idB, "token-db")
	var log logBuffer
	src := newIstioSource(t, f.options(&log, tokens, idA, idB))
	if src.Ready() {
		t.Fatal("ready before asking istiod")
	}
	run(t, src)
	eventually(t, 5*time.Second, "ready", src.Ready)

	for _, id := range []spiffeid.ID{idA, idB} {
		svid, ok := src.Snapshot().SVID(id)
		if !ok {
			t.Fatalf("no SVID for %s", id)
		}
		leaf := svid.Certificates[0]
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
			t.Errorf("%s: URI SANs %v; want exactly %s", id, leaf.URIs, id)
		}
		if k, ok := svid.PrivateKey.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
			t.Errorf("%s: key %T; want ECDSA P-256", id, svid.PrivateKey)
		}
	}
	reqs := f.seen()
	if len(reqs) != 2 {
		t.Fatalf("istiod saw %d requests; want 2", len(reqs))
	}
	for _, r := range reqs {
		want := map[string]spiffeid.ID{"token-web": idA, "token-db": idB}[r.token]
		switch {
		case want.IsZero():
			t.Errorf("request with token %q; want one of the identities' tokens", r.token)
		case len(r.csr.URIs) != 1 || r.csr.URIs[0].String() != want.String() || len(r.csr.DNSNames) != 0:
			t.Errorf("CSR with token %q names %v %v; want only %s", r.token, r.csr.URIs, r.csr.DNSNames, want)
		case r.csr.SignatureAlgorithm != x509.ECDSAWithSHA256:
			t.Errorf("CSR signed with %s; want ECDSA-SHA256", r.csr.SignatureAlgorithm)
		case r.validity != 86400 || r.clusterID != "test-cluster":
			t.Errorf("validity %d, clusterid %q; want 86400 and test-cluster", r.validity, r.clusterID)
		}
	}
	roots := 0
	for _, c := range src.Certificates() {
		if c.Kind == identity.KindRoot {
			roots++
		}
	}
	if roots != 1 {
		t.Errorf("%d roots in %v; want the mesh root once (RootCert and istiod's answer hold the same)", roots, src.Certificates())
	}

	srv := startTLSServer(t, "127.0.0.1:0", identity.ServerTLSConfig(src, onlyAddr("127.0.0.1", idA)))
	conn, err := dial(t, srv.addr(), identity.ClientTLSConfig(src, idB, []spiffeid.ID{idA}))
	if err != nil {
		t.Fatalf("HBONE handshake with istiod's certificates: %v", err)
	}
	if err := echo(conn); err != nil {
		t.Error(err)
	}
}

// TestIstioSourceRenewsAtHalfLife: a 4 s certificate (backdated two minutes, as istiod does) is renewed about
// 2 s after it arrived, with the current certificate or else the token as it is on disk then; the first
// certificate is used until then.
func TestIstioSourceRenewsAtHalfLife(t *testing.T) {
	f := startFakeIstiod(t, false)
	tokens := t.TempDir()
	f.grant(t, tokens, idA, "token-1")
	opts := f.options(nil, tokens, idA)
	opts.Istio.Validity = 4 * time.Second
	src := newIstioSource(t, opts)
	run(t, src)
	eventually(t, 5*time.Second, "ready", src.Ready)
	first, start := heldSerial(src, idA), time.Now()
	f.grant(t, tokens, idA, "token-2")

	for heldSerial(src, idA) == first && time.Since(start) < 5*time.Second {
		if !src.Ready() {
			t.Fatalf("not ready %s after the first certificate", time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(start)
	if heldSerial(src, idA) == first || took < 1200*time.Millisecond || took > 3*time.Second {
		t.Fatalf("renewed after %s; want about half of 4s (NotAfter has whole seconds: 1.5-2s)", took)
	}
	// The renewal tries the current certificate first, without a token: this fake istiod knows only tokens and
	// refuses it (tests/interop/ca has istiod's own client-certificate authenticator), so token-2 follows.
	reqs := f.seen()
	if len(reqs) != 3 || reqs[0].token != "token-1" || reqs[1].token != "" || reqs[2].token != "token-2" || reqs[2].validity != 4 {
		t.Fatalf("requests %+v; want token-1, then the certificate alone, then token-2 (read again), 4s each", reqs)
	}
	if !src.Ready() {
		t.Error("not ready after the renewal")
	}
}

// TestIstioSourceRetriesRefusal: istiod refuses the renewal; the refusal is logged with the identity, the gRPC
// code and istiod's message, retried with backoff, and the current certificate is kept until it expires.
func TestIstioSourceRetriesRefusal(t *testing.T) {
	f := startFakeIstiod(t, false)
	tokens := t.TempDir()
	f.grant(t, tokens, idA, "token")
	var log logBuffer
	opts := f.options(&log, tokens, idA)
	opts.Istio.Validity = 4 * time.Second
	src := newIstioSource(t, opts)
	run(t, src)
	eventually(t, 5*time.Second, "ready", src.Ready)
	first := heldSerial(src, idA)
	svid, _ := src.Snapshot().SVID(idA)
	notAfter := svid.Certificates[0].NotAfter
	f.refuse(codes.Unauthenticated, "request authenticate failure")

	const kept = "renewal from istiod failed; the current certificate stays in use until it expires"
	eventually(t, 5*time.Second, "retried twice", func() bool { return strings.Count(log.String(), kept) >= 2 })
	if time.Now().Before(notAfter) && (heldSerial(src, idA) != first || !src.Ready()) {
		t.Errorf("certificate %s, ready %v while refused; want %s kept and ready until %s", heldSerial(src, idA), src.Ready(), first, notAfter)
	}
	ns, sa, _ := identity.ParseIstioID(idA)
	for _, want := range []string{idA.String(), "Unauthenticated", "request authenticate failure", identity.IstioTokenPath(tokens, ns, sa)} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the refusal's log does not say %q:\n%s", want, log.String())
		}
	}

	eventually(t, 5*time.Second, "not ready after the certificate expired", func() bool { return !src.Ready() })
	if heldSerial(src, idA) != first {
		t.Errorf("held %s; want the expired %s still shown (nothing replaced it)", heldSerial(src, idA), first)
	}
	f.refuse(codes.OK, "")
	eventually(t, 10*time.Second, "ready again once istiod answers", src.Ready)
	if n := len(f.seen()); n < 4 {
		t.Errorf("istiod saw %d requests; want the first, at least two refused retries and the last", n)
	}
}

// TestIstioSourceNeedsToken: a missing or empty token file is a clear error, and istiod is not asked; the token
// written later is used by the next retry.
func TestIstioSourceNeedsToken(t *testing.T) {
	f := startFakeIstiod(t, false)
	tokens := t.TempDir()
	ns, sa, _ := identity.ParseIstioID(idA)
	path := identity.IstioTokenPath(tokens, ns, sa)
	var log logBuffer
	src := newIstioSource(t, f.options(&log, tokens, idA))
	run(t, src)
	eventually(t, 5*time.Second, "missing token logged", func() bool {
		return strings.Contains(log.String(), "service-account token: open "+path+": no such file or directory")
	})
	writeFile(t, path, []byte("\n"))
	eventually(t, 5*time.Second, "empty token logged", func() bool {
		return strings.Contains(log.String(), "service-account token "+path+" is empty")
	})
	if n := len(f.seen()); n != 0 || src.Ready() {
		t.Fatalf("istiod saw %d requests, ready %v without a token; want none, not ready", n, src.Ready())
	}
	f.grant(t, tokens, idA, "token")
	eventually(t, 10*time.Second, "ready once the token is there", src.Ready)
}

// TestIstioSourceRefusesBadAnswers: an answer is validated like any other certificate and refused when it
// does not fit.
func TestIstioSourceRefusesBadAnswers(t *testing.T) {
	other := newTestCA(t, "cluster.local")
	for name, tc := range map[string]struct {
		tokenFor spiffeid.ID // istiod issues for the token's identity
		chain    func(f *fakeIstiod, leaf *x509.Certificate) []string
		want     string
	}{
		"another identity's token": {tokenFor: idB, want: "certificate is for " + idB.String() + ", not " + idA.String()},
		"signed by another CA": {chain: func(f *fakeIstiod, leaf *x509.Certificate) []string {
			tmpl := *leaf
			forged, err := other.issue(&tmpl, leaf.PublicKey)
			if err != nil {
				panic(err)
			}
			return []string{string(pemCert(forged.Raw)), string(f.ca.rootPEM())}
		}, want: "certificate does not verify against the trust bundle"},
		"no root": {chain: func(_ *fakeIstiod, leaf *x509.Certificate) []string {
			return []string{string(pemCert(leaf.Raw))}
		}, want: "1 certificates; want the certificate, any intermediates, and the root"},
		"root is no CA": {chain: func(_ *fakeIstiod, leaf *x509.Certificate) []string {
			return []string{string(pemCert(leaf.Raw)), string(pemCert(leaf.Raw))}
		}, want: "root: certificate 1"},
		"garbage": {chain: func(_ *fakeIstiod, _ *x509.Certificate) []string {
			return []string{"not PEM", "-----BEGIN CERTIFICATE-----\nAAAA"}
		}, want: "root: truncated or malformed PEM block"},
	} {
		t.Run(name, func(t *testing.T) {
			f := startFakeIstiod(t, false)
			if tc.chain != nil {
				f.answerWith(func(leaf *x509.Certificate) []string { return tc.chain(f, leaf) })
			}
			tokens := t.TempDir()
			f.grant(t, tokens, idA, "token")
			if !tc.tokenFor.IsZero() {
				f.grant(t, t.TempDir(), tc.tokenFor, "token")
			}
			var log logBuffer
			src := newIstioSource(t, f.options(&log, tokens, idA))
			run(t, src)
			t.Cleanup(func() {
				if t.Failed() {
					t.Log(log.String())
				}
			})
			eventually(t, 5*time.Second, "refused", func() bool {
				return strings.Contains(log.String(), "refused istiod's answer: "+tc.want)
			})
			if _, held := src.Snapshot().SVID(idA); held || src.Ready() {
				t.Errorf("held %v, ready %v after a bad answer:\n%s", held, src.Ready(), log.String())
			}
		})
	}
}

// TestIstioSourceVerifiesIstiod: istiod's certificate must chain to RootCert and carry the server name; else
// the token is never sent.
func TestIstioSourceVerifiesIstiod(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(*identity.Options)
		want string
	}{
		"unknown root": {func(o *identity.Options) {
			o.Istio.RootCert = filepath.Join(t.TempDir(), "other-root.pem")
			writeFile(t, o.Istio.RootCert, newTestCA(t, "cluster.local").rootPEM())
		}, "certificate signed by unknown authority"},
		"server name from the address": {func(o *identity.Options) { o.Istio.ServerName = "" },
			"cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"},
	} {
		t.Run(name, func(t *testing.T) {
			f := startFakeIstiod(t, false)
			tokens := t.TempDir()
			f.grant(t, tokens, idA, "token")
			var log logBuffer
			opts := f.options(&log, tokens, idA)
			tc.edit(&opts)
			src := newIstioSource(t, opts)
			run(t, src)
			eventually(t, 5*time.Second, "refused", func() bool {
				return strings.Contains(log.String(), "answered Unavailable") && strings.Contains(log.String(), tc.want)
			})
			if n := len(f.seen()); n != 0 || src.Ready() {
				t.Errorf("istiod saw %d requests, ready %v; want none, not ready", n, src.Ready())
			}
		})
	}
}

// TestIstioSourcePlaintext: the test-only plaintext mode trusts the roots istiod sends.
func TestIstioSourcePlaintext(t *testing.T) {
	f := startFakeIstiod(t, true)
	tokens := t.TempDir()
	f.grant(t, tokens, idA, "token")
	opts := f.options(nil, tokens, idA)
	opts.Istio.Plaintext, opts.Istio.RootCert = true, ""
	src := newIstioSource(t, opts)
	run(t, src)
	eventually(t, 5*time.Second, "ready", src.Ready)
	b, err := src.Snapshot().GetX509BundleForTrustDomain(tdLocal)
	if err != nil || !b.HasX509Authority(f.ca.cert) {
		t.Errorf("bundle %v, %v; want istiod's root", b, err)
	}
}

func TestIstioOptionsValidated(t *testing.T) {
	dir := t.TempDir()
	notCA := filepath.Join(dir, "leaf.pem")
	ca := newTestCA(t, "cluster.local")
	writeFile(t, notCA, ca.workload(t, idA).chainPEM)
	good := identity.IstioOptions{Address: "istiod.istio-system.svc:15012", RootCert: filepath.Join(dir, "root.pem"), TokenDir: dir}
	writeFile(t, good.RootCert, ca.rootPEM())
	for name, tc := range map[string]struct {
		edit func(*identity.IstioOptions)
		ids  []spiffeid.ID
		want string
	}{
		"no port":            {func(o *identity.IstioOptions) { o.Address = "istiod" }, nil, `address "istiod" is not host:port`},
		"relative token dir": {func(o *identity.IstioOptions) { o.TokenDir = "tokens" }, nil, `token dir "tokens" is not an absolute path`},
		"no root":            {func(o *identity.IstioOptions) { o.RootCert = "" }, nil, "root certificate is required"},
		"missing root":       {func(o *identity.IstioOptions) { o.RootCert = "/nonexistent/root.pem" }, nil, "root certificate /nonexistent/root.pem: open"},
		"root is no CA":      {func(o *identity.IstioOptions) { o.RootCert = notCA }, nil, "is not a CA certificate"},
		"fractional validity": {func(o *identity.IstioOptions) { o.Validity = 1500 * time.Millisecond }, nil,
			"validity 1.5s is not a positive whole number of seconds"},
		"not an Istio identity": {func(*identity.IstioOptions) {}, []spiffeid.ID{spiffeid.RequireFromString("spiffe://cluster.local/web")},
			"istio source: identity spiffe://cluster.local/web is not of the form"},
	} {
		o := good
		tc.edit(&o)
		_, err := identity.New(identity.Options{Source: identity.SourceIstio, TrustDomain: tdLocal, Identities: tc.ids, Istio: o})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New = %v; want an error containing %q", name, err, tc.want)
		}
	}
	src, err := identity.New(identity.Options{Source: identity.SourceIstio, TrustDomain: tdLocal, Identities: []spiffeid.ID{idA}, Istio: good})
	if err != nil || src.Ready() {
		t.Fatalf("New = %v, ready %v; want a source that is not ready before asking istiod", err, src != nil && src.Ready())
	}
}
