package identity_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// handshake is what the server side of a test connection saw.
type handshake struct {
	state tls.ConnectionState
	err   error
}

// tlsServer is a real TCP listener whose connections do a TLS server handshake with cfg, report it, and then
// echo whatever the client sends.
type tlsServer struct {
	ln      net.Listener
	results chan handshake
}

func startTLSServer(t *testing.T, addr string, cfg *tls.Config) *tlsServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	s := &tlsServer{ln: ln, results: make(chan handshake, 16)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := tls.Server(c, cfg)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := tc.HandshakeContext(ctx)
				cancel()
				s.results <- handshake{state: tc.ConnectionState(), err: err}
				if err == nil {
					io.Copy(tc, tc)
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

func (s *tlsServer) addr() string { return s.ln.Addr().String() }

// next returns the server's view of the next handshake.
func (s *tlsServer) next(t *testing.T) handshake {
	t.Helper()
	select {
	case h := <-s.results:
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("the server saw no handshake within 10s")
		return handshake{}
	}
}

// dial connects to addr with cfg and completes the client handshake and one echo round trip, which in TLS 1.3
// is when a client learns that the server refused its certificate.
func dial(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*tls.Conn)
	if err := echo(tc); err != nil {
		tc.Close()
		return nil, err
	}
	t.Cleanup(func() { tc.Close() })
	return tc, nil
}

func echo(c *tls.Conn) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		return errors.New("echo mismatch")
	}
	return nil
}

// mesh is a trust domain with a static source per identity.
type mesh struct {
	ca    *testCA
	certs map[spiffeid.ID]issued
}

func newMesh(t *testing.T, td string, ids ...spiffeid.ID) *mesh {
	t.Helper()
	m := &mesh{ca: newTestCA(t, td), certs: map[spiffeid.ID]issued{}}
	for _, id := range ids {
		m.certs[id] = m.ca.workload(t, id)
	}
	return m
}

func (m *mesh) source(t *testing.T, ids ...spiffeid.ID) identity.Source {
	t.Helper()
	svids := make([]*x509svid.SVID, 0, len(ids))
	for _, id := range ids {
		svids = append(svids, m.certs[id].svid(t))
	}
	src, err := identity.NewStatic(m.ca.td, svids, m.ca.bundle())
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// rawClient is a plain Go TLS client presenting cert, trusting anything: a peer that does not follow HBONE's rules.
func rawClient(cert issued, edit func(*tls.Config)) *tls.Config {
	cfg := &tls.Config{
		InsecureSkipVerify: true,
		NextProtos:         []string{"h2"},
		Certificates:       []tls.Certificate{{Certificate: [][]byte{cert.cert.Raw}, PrivateKey: cert.key, Leaf: cert.cert}},
	}
	if edit != nil {
		edit(cfg)
	}
	return cfg
}

func onlyAddr(ip string, id spiffeid.ID) identity.LocalIdentity {
	want := netip.MustParseAddr(ip)
	return func(a netip.Addr, _ string) (spiffeid.ID, bool) { return id, a == want }
}

func peerSerial(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	return cs.PeerCertificates[0].SerialNumber.Text(16)
}

func TestHandshakeNegotiatesHBONEParameters(t *testing.T) {
	m := newMesh(t, "cluster.local", idA, idB)
	srv := startTLSServer(t, "127.0.0.1:0", identity.ServerTLSConfig(m.source(t, idA), onlyAddr("127.0.0.1", idA)))
	c, err := dial(t, srv.addr(), identity.ClientTLSConfig(m.source(t, idB), idB, []spiffeid.ID{idA}))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	cs := c.ConnectionState()
	if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != "h2" || cs.DidResume {
		t.Errorf("client: version %s, ALPN %q, resumed %v; want TLS 1.3, h2, no resumption",
			tls.VersionName(cs.Version), cs.NegotiatedProtocol, cs.DidResume)
	}
	if cs.CipherSuite != tls.TLS_AES_128_GCM_SHA256 && cs.CipherSuite != tls.TLS_AES_256_GCM_SHA384 {
		t.Errorf("cipher suite %s; want AES-GCM", tls.CipherSuiteName(cs.CipherSuite))
	}
	if id, err := identity.PeerID(cs); err != nil || id != idA {
		t.Errorf("client sees server %v, %v; want %s", id, err, idA)
	}
	h := srv.next(t)
	if h.err != nil {
		t.Fatalf("server handshake: %v", h.err)
	}
	if h.state.ServerName != "" {
		t.Errorf("the client sent SNI %q; want none", h.state.ServerName)
	}
	if h.state.NegotiatedProtocol != "h2" {
		t.Errorf("server ALPN %q; want h2", h.state.NegotiatedProtocol)
	}
	if id, err := identity.PeerID(h.state); err != nil || id != idB {
		t.Errorf("server sees client %v, %v; want %s", id, err, idB)
	}
	if got, want := peerSerial(h.state), serial(m.certs[idB]); got != want {
		t.Errorf("client presented serial %s; want %s", got, want)
	}
}

func TestServerPresentsCertificateOfLocalAddress(t *testing.T) {
	m := newMesh(t, "cluster.local", idA, idB)
	byAddr := map[netip.Addr]spiffeid.ID{netip.MustParseAddr("127.0.0.1"): idA, netip.MustParseAddr("127.0.0.2"): idB}
	cfg := identity.ServerTLSConfig(m.source(t, idA, idB), func(a netip.Addr, _ string) (spiffeid.ID, bool) {
		id, ok := byAddr[a]
		return id, ok
	})
	srvA := startTLSServer(t, "127.0.0.1:0", cfg)
	srvB := startTLSServer(t, "127.0.0.2:0", cfg)
	srvC := startTLSServer(t, "127.0.0.3:0", cfg) // an address no local workload owns
	client := newMesh(t, "cluster.local")
	client.ca = m.ca
	clientID := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/client")
	client.certs[clientID] = m.ca.workload(t, clientID)
	src := client.source(t, clientID)
	for _, tc := range []struct {
		srv  *tlsServer
		want spiffeid.ID
	}{{srvA, idA}, {srvB, idB}} {
		c, err := dial(t, tc.srv.addr(), identity.ClientTLSConfig(src, clientID, []spiffeid.ID{idA, idB}))
		if err != nil {
			t.Fatalf("%s: %v", tc.srv.addr(), err)
		}
		cs := c.ConnectionState()
		if got, want := peerSerial(cs), serial(m.certs[tc.want]); got != want {
			t.Errorf("%s presented serial %s; want %s, the certificate of %s", tc.srv.addr(), got, want, tc.want)
		}
		if id, _ := identity.PeerID(cs); id != tc.want {
			t.Errorf("%s presented %s; want %s", tc.srv.addr(), id, tc.want)
		}
		tc.srv.next(t)
	}
	// 127.0.0.2 presents B, so a client that expects only A refuses it.
	if _, err := dial(t, srvB.addr(), identity.ClientTLSConfig(src, clientID, []spiffeid.ID{idA})); err == nil {
		t.Error("a client expecting only A accepted the server at B's address")
	}
	srvB.next(t)
	if _, err := dial(t, srvC.addr(), identity.ClientTLSConfig(src, clientID, []spiffeid.ID{idA, idB})); err == nil {
		t.Error("handshake on an address no workload owns succeeded")
	}
	if h := srvC.next(t); h.err == nil || !strings.Contains(h.err.Error(), "no local workload owns 127.0.0.3") {
		t.Errorf("server error %v; want no local workload owns 127.0.0.3", h.err)
	}
}

func TestClientRejectsUnexpectedServer(t *testing.T) {
	m := newMesh(t, "cluster.local", idA, idB)
	srv := startTLSServer(t, "127.0.0.1:0", identity.ServerTLSConfig(m.source(t, idA), onlyAddr("127.0.0.1", idA)))
	for name, expected := range map[string][]spiffeid.ID{
		"other identity":     {idB},
		"nothing expected":   nil,
		"other trust domain": {idOtherT},
	} {
		_, err := dial(t, srv.addr(), identity.ClientTLSConfig(m.source(t, idB), idB, expected))
		if err == nil || !strings.Contains(err.Error(), `unexpected ID "`+idA.String()+`"`) {
			t.Errorf("%s: client error %v; want unexpected ID %s", name, err, idA)
		}
		srv.next(t)
	}
	// A server of another mesh, whose root the client does not trust, is refused before its ID is looked at.
	other := newMesh(t, "cluster.local", idA)
	srvOther := startTLSServer(t, "127.0.0.1:0", identity.ServerTLSConfig(other.source(t, idA), onlyAddr("127.0.0.1", idA)))
	if _, err := dial(t, srvOther.addr(), identity.ClientTLSConfig(m.source(t, idB), idB, []spiffeid.ID{idA})); err == nil ||
		!strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("client error %v; want an unknown-authority failure", err)
	}
	srvOther.next(t)
}

// Two workloads on one address: the server picks the certificate by SNI, and
// presents the address's primary workload's to a client that sends none.
func TestServerPicksCertificateBySNIOnSharedAddress(t *testing.T) {
	m := newMesh(t, "cluster.local", idA, idB)
	cfg := identity.ServerTLSConfig(m.source(t, idA, idB), func(a netip.Addr, sni string) (spiffeid.ID, bool) {
		if sni == "b.shop.workload.ambient-agent" {
			return idB, true
		}
		return idA, a == netip.MustParseAddr("127.0.0.1")
	})
	srv := startTLSServer(t, "127.0.0.1:0", cfg)
	client := newMesh(t, "cluster.local")
	client.ca = m.ca
	clientID := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/client")
	client.certs[clientID] = m.ca.workload(t, clientID)
	src := client.source(t, clientID)
	for _, tc := range []struct {
		sni  string
		want spiffeid.ID
	}{{"b.shop.workload.ambient-agent", idB}, {"", idA}} {
		cc := identity.ClientTLSConfig(src, clientID, []spiffeid.ID{tc.want})
		cc.ServerName = tc.sni
		c, err := dial(t, srv.addr(), cc)
		if err != nil {
			t.Fatalf("SNI %q: %v", tc.sni, err)
		}
		if id, _ := identity.PeerID(c.ConnectionState()); id != tc.want {
			t.Errorf("SNI %q: server presented %s, want %s", tc.sni, id, tc.want)
		}
		srv.next(t)
	}
}

func TestServerRejectsClientOfAnotherTrustDomain(t *testing.T) {
	m := newMesh(t, "cluster.local", idA)
	srv := startTLSServer(t, "127.0.0.1:0", identity.ServerTLSConfig(m.source(t, idA), onlyAddr("127.0.0.1", idA)))
	otherMesh := newMesh(t, "other.local", idOtherT)
	for name, cert := range map[string]issued{
		"signed by our root":        m.ca.workload(t, idOtherT),
		"signed by its own root":    otherMesh.certs[idOtherT],
		"our trust domain, foreign": newTestCA(t, "cluster.local").workload(t, idB),
	} {
		if _, err := dial(t, srv.addr(), rawClient(cert, nil)); err == nil {
			t.Errorf("%s: the client's handshake and echo succeeded", name)
		}
		h := srv.next(t)
		if h.err == nil {
			t.Errorf("%s: the server accepted the client", name)
			continue
		}
		t.Logf("%s: server refused: %v", name, h.err)
	}
	// With the other trust domain's bundle federated, its client's chain verifies, and the trust domain rule
	// alone refuses it.
	federated, err := identity.NewStatic(m.ca.td, []*x509svid.SVID{m.certs[idA].svid(t)}, m.ca.bundle(), otherMesh.ca.bundle())
	if err != nil {
		t.Fatal(err)
	}
	srvFed := startTLSServer(t, "127.0.0.1:0", identity.ServerTLSConfig(federated, onlyAddr("127.0.0.1", idA)))
	if _, err := dial(t, srvFed.addr(), rawClient(otherMesh.certs[idOtherT], nil)); err == nil {
		t.Error("federated: the client's handshake and echo succeeded")
	}
	if h := srvFed.next(t); h.err == nil || !strings.Contains(h.err.Error(), `unexpected trust domain "other.local"`) {
		t.Errorf("federated: server error %v; want unexpected trust domain", h.err)
	}
	// The positive control: the same raw client with a certificate of our trust domain and root is accepted.
	if _, err := dial(t, srv.addr(), rawClient(m.ca.workload(t, idB), nil)); err != nil {
		t.Errorf("a raw client of our trust domain was refused: %v", err)
	}
	if h := srv.next(t); h.err != nil {
		t.Errorf("server refused our own trust domain: %v", h.err)
	}
}

func TestServerRefusesNonHBONEClients(t *testing.T) {
	m := newMesh(t, "cluster.local", idA, idB)
	srv := startTLSServer(t, "127.0.0.1:0", identity.ServerTLSConfig(m.source(t, idA), onlyAddr("127.0.0.1", idA)))
	good := m.certs[idB]
	for name, tc := range map[string]struct {
		edit func(*tls.Config)
		want string
	}{
		"TLS 1.2 only":          {func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }, "unsupported versions"},
		"no client certificate": {func(c *tls.Config) { c.Certificates = nil }, "certificate"},
		"no ALPN":               {func(c *tls.Config) { c.NextProtos = nil }, "ALPN"},
		"ALPN http/1.1":         {func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }, "ALPN"},
	} {
		if _, err := dial(t, srv.addr(), rawClient(good, tc.edit)); err == nil {
			t.Errorf("%s: client's handshake and echo succeeded", name)
		}
		h := srv.next(t)
		if h.err == nil || !strings.Contains(h.err.Error(), tc.want) {
			t.Errorf("%s: server error %v; want one mentioning %q", name, h.err, tc.want)
		}
	}
}

func TestClientRefusesNonHBONEServers(t *testing.T) {
	m := newMesh(t, "cluster.local", idA, idB)
	a := m.certs[idA]
	serverCert := []tls.Certificate{{Certificate: [][]byte{a.cert.Raw}, PrivateKey: a.key}}
	for name, tc := range map[string]struct {
		cfg  *tls.Config
		want string
	}{
		"TLS 1.2 only": {&tls.Config{Certificates: serverCert, MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}, "protocol version"},
		"no ALPN":      {&tls.Config{Certificates: serverCert}, "ALPN"},
	} {
		srv := startTLSServer(t, "127.0.0.1:0", tc.cfg)
		_, err := dial(t, srv.addr(), identity.ClientTLSConfig(m.source(t, idB), idB, []spiffeid.ID{idA}))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: client error %v; want one mentioning %q", name, err, tc.want)
		}
		srv.next(t)
	}
}

func TestClientWithoutItsCertificateFails(t *testing.T) {
	m := newMesh(t, "cluster.local", idA, idB)
	srv := startTLSServer(t, "127.0.0.1:0", identity.ServerTLSConfig(m.source(t, idA), onlyAddr("127.0.0.1", idA)))
	_, err := dial(t, srv.addr(), identity.ClientTLSConfig(m.source(t, idA), idB, []spiffeid.ID{idA}))
	if err == nil || !strings.Contains(err.Error(), "no certificate for "+idB.String()) {
		t.Errorf("client error %v; want no certificate for %s", err, idB)
	}
	srv.next(t)
}
