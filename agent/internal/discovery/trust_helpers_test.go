package discovery

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/leak"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// testCA is a mesh root of trust domain cluster.local that issues SVIDs on demand (real ECDSA, real x509).
type testCA struct {
	td    spiffeid.TrustDomain
	cert  *x509.Certificate
	key   *ecdsa.PrivateKey
	mu    sync.Mutex
	svids map[string]*x509svid.SVID
}

var (
	caOnce     sync.Once
	sharedCA   *testCA
	foreignCA_ *testCA
)

func newTestCA(td string) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: td + " root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{{Scheme: "spiffe", Host: td}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{td: spiffeid.RequireTrustDomainFromString(td), cert: cert, key: key, svids: map[string]*x509svid.SVID{}}
}

// testCAs returns this package's mesh CA and a CA of another trust domain.
func testCAs() (*testCA, *testCA) {
	caOnce.Do(func() { sharedCA, foreignCA_ = newTestCA("cluster.local"), newTestCA("cluster.local") })
	return sharedCA, foreignCA_
}

// issue returns an SVID for id, valid from notBefore to notAfter, with IP SANs ips; cached by all of them.
func (ca *testCA) issue(id spiffeid.ID, notAfter time.Time, ips ...netip.Addr) *x509svid.SVID {
	k := id.String() + notAfter.String()
	for _, ip := range ips {
		k += ip.String()
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if s, ok := ca.svids[k]; ok {
		return s
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id.String())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: notAfter, URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		panic(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	s := &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
	ca.svids[k] = s
	return s
}

func (ca *testCA) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

// testTrust trusts the mesh CA and holds a certificate (from it) for every identity asked for.
func testTrust() Trust {
	ca, _ := testCAs()
	return Trust{
		Bundles: func() x509bundle.Source { return ca.bundle() },
		SVID: func(id spiffeid.ID) (*x509svid.SVID, bool) {
			return ca.issue(id, time.Now().Add(24*time.Hour).Truncate(time.Hour)), true
		},
	}
}

// signedBy encodes r and signs it with svids: what a member that holds those identities can publish.
func signedBy(t testing.TB, r *Record, svids ...*x509svid.SVID) []byte {
	t.Helper()
	raw, _, err := signRecord(encodeRecord(r), svids, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// signed encodes r signed by every identity it claims, from the mesh CA.
func signed(t testing.TB, r *Record) []byte {
	t.Helper()
	tr := testTrust()
	var svids []*x509svid.SVID
	seen := map[spiffeid.ID]bool{}
	add := func(td, ns, sa string) {
		id, err := identityOf(td, ns, sa)
		if err != nil || seen[id] {
			return
		}
		seen[id] = true
		s, _ := tr.SVID(id)
		svids = append(svids, s)
	}
	for _, w := range r.Workloads {
		add(w.TrustDomain, w.Namespace, w.ServiceAccount)
	}
	if w := r.Waypoint; w != nil {
		add(w.TrustDomain, w.Namespace, w.ServiceAccount)
	}
	if g := r.Gateway; g != nil {
		add(g.TrustDomain, g.Namespace, g.ServiceAccount)
	}
	return signedBy(t, r, svids...)
}

// TestFirstRecordWaitsForItsCertificates: a node whose certificates have not
// arrived publishes nothing (peers keep its previous record) rather than a
// record that leaves its claims out; it publishes them all once they arrive,
// and never with an expired certificate.
func TestFirstRecordWaitsForItsCertificates(t *testing.T) {
	ca, _ := testCAs()
	var held atomic.Bool
	var expired atomic.Bool
	trust := testTrust()
	trust.SVID = func(id spiffeid.ID) (*x509svid.SVID, bool) {
		switch {
		case expired.Load():
			s := *ca.issue(id, time.Now().Add(24*time.Hour).Truncate(time.Hour))
			leaf := *s.Certificates[0]
			leaf.NotAfter = time.Now().Add(-time.Minute)
			s.Certificates = []*x509.Certificate{&leaf}
			return &s, true
		case held.Load():
			return ca.issue(id, time.Now().Add(24*time.Hour).Truncate(time.Hour)), true
		}
		return nil, false
	}
	d, err := New(Options{NodeName: "a", Bind: netip.MustParseAddrPort("127.0.0.1:0"), Keys: [][]byte{testKey}, Trust: trust,
		GracePeriod: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SetLocal(*testRecord(1, 2)); err != nil {
		t.Fatal(err)
	}
	if r, ok := d.Local(); ok {
		t.Fatalf("published before its certificates arrived: %+v", r)
	}
	held.Store(true)
	if err := d.Resign(); err != nil {
		t.Fatal(err)
	}
	if r, ok := d.Local(); !ok || len(r.Workloads) != 2 {
		t.Fatalf("with its certificates: %+v, %v", r, ok)
	}
	expired.Store(true)
	if err := d.SetLocal(*testRecord(1, 3)); err != nil {
		t.Fatal(err)
	}
	if r, _ := d.Local(); len(r.Workloads) != 0 {
		t.Errorf("an expired certificate signed: %d workloads published", len(r.Workloads))
	}
}

// When the trust bundle changes (a root removed), the records in use are
// verified again: those it no longer verifies stop counting at once.
func TestBundleRotationReverifies(t *testing.T) {
	leak.AtCleanup(t, discoveryLeaks)
	mesh, foreign := testCAs()
	var rotated atomic.Bool
	withRotatingBundle := func(_ *testNode, o *Options) {
		o.Trust.Bundles = func() x509bundle.Source {
			if rotated.Load() {
				return foreign.bundle()
			}
			return mesh.bundle()
		}
	}
	a := startNode(t, "a", testRecord(1, 1))
	b := startNode(t, "b", testRecord(2, 1), withSeeds(a), withRotatingBundle)
	waitFor(t, 20*time.Second, "b uses a's record", func() bool { return b.hasWorkload("a/default/w0") })
	rotated.Store(true)
	b.d.Reverify()
	if b.hasWorkload("a/default/w0") {
		t.Error("a's record still counts under a bundle that does not verify it")
	}
	if b.d.Stats().Dropped[reasonBadProof] == 0 {
		t.Errorf("not counted: %v", b.d.Stats().Dropped)
	}
}
