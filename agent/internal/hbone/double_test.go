package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	gatewayID = "spiffe://cluster.local/ns/istio-system/sa/eastwest"
	remoteID  = "spiffe://cluster.local/ns/default/sa/echo"
	echoHost  = "echo.default.svc.cluster.local"
)

// seen is what a test server's handler saw of each request.
type seen struct {
	mu   sync.Mutex
	reqs []seenRequest
}

type seenRequest struct {
	peer      spiffeid.ID
	authority string
	network   string
}

func (s *seen) add(r *Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, seenRequest{r.PeerIdentity, r.Target.String(), r.Header("x-forwarded-network")})
}

func (s *seen) list() []seenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seenRequest(nil), s.reqs...)
}

// testServer serves HBONE on loopback as id, with a testHandler deciding by authorize.
func testServer(t *testing.T, ca *testCA, id string, authorize func(context.Context, *Request) decision) (netip.AddrPort, *recorder) {
	t.Helper()
	tel := newRecorder()
	srv, err := NewServer(ServerConfig{
		Certificate: staticCertificate(id, ca.serverTLS(ca.leaf(t, id))),
		Handler:     &testHandler{authorize: authorize, tel: tel, dialer: &net.Dialer{}, connectTimeout: 5 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln := listenLoopback(t)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return lnAddr(ln), tel
}

// Double HBONE through a gateway that splices the outer tunnel to the destination's HBONE port, as an east-west
// gateway does: the destination sees the client's own identity and its network, the gateway only the outer
// request, and the tunnel carries bytes both ways and ends cleanly.
func TestDialDouble(t *testing.T) {
	ca := newTestCA(t)
	echo := echoServer(t)
	var atDest, atGateway seen
	dest, _ := testServer(t, ca, remoteID, func(_ context.Context, r *Request) decision {
		atDest.add(r)
		if r.Target.Host != echoHost {
			return deny(FlagBadRequest, errors.New("not the echo service"))
		}
		return allow(echo)
	})
	gw, gwTel := testServer(t, ca, gatewayID, func(_ context.Context, r *Request) decision {
		atGateway.add(r)
		if r.Target.Host != echoHost {
			return deny(FlagBadRequest, errors.New("not a service this gateway serves"))
		}
		return allow(dest) // the destination node's HBONE port: the inner session goes through untouched
	})
	pool, outer, inner := doubleClient(t, ca, PoolConfig{}, gw)
	client, authority := outer.Source, outer.Authority
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	st, err := pool.DialDouble(ctx, outer, inner, "network-a")
	if err != nil {
		t.Fatalf("DialDouble: %v", err)
	}
	if _, err := st.Write([]byte("across networks")); err != nil {
		t.Fatal(err)
	}
	_ = st.CloseWrite()
	if got := string(readAll(t, st)); got != "across networks" {
		t.Fatalf("echo %q", got)
	}
	_ = st.Close()

	want := seenRequest{peer: client, authority: authority}
	if got := atGateway.list(); len(got) != 1 || got[0] != want {
		t.Errorf("the gateway saw %+v, want one %+v (no x-forwarded-network on the outer request)", got, want)
	}
	want.network = "network-a"
	if got := atDest.list(); len(got) != 1 || got[0] != want {
		t.Errorf("the destination saw %+v, want one %+v: the client's own identity through the gateway", got, want)
	}
	// The inner connection ends with its stream, and the outer tunnel with it.
	gwTel.waitFor(t, "the outer tunnel closed", func(r *recorder) bool { return len(r.closed) == 1 })

	// A destination that is not who the service's identities say: refused at the inner handshake, the outer
	// tunnel closed.
	wrong := inner
	wrong.Expected = []spiffeid.ID{spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/other")}
	if _, err := pool.DialDouble(ctx, outer, wrong, "network-a"); FlagOf(err) != FlagTLS {
		t.Errorf("an unexpected destination identity: %v, want a TLS failure", err)
	}
	gwTel.waitFor(t, "the second outer tunnel closed", func(r *recorder) bool { return len(r.closed) == 2 })
	if got := atDest.list(); len(got) != 1 {
		t.Errorf("the destination got %d requests, want 1: no CONNECT after a failed inner handshake", len(got))
	}
	// Nothing to verify the destination against, or no network: refused before anything is sent.
	noIDs := inner
	noIDs.Expected = nil
	if _, err := pool.DialDouble(ctx, outer, noIDs, "network-a"); FlagOf(err) != FlagTLS {
		t.Errorf("no expected identity: %v, want a TLS refusal", err)
	}
	if _, err := pool.DialDouble(ctx, outer, inner, ""); FlagOf(err) != FlagBadRequest {
		t.Errorf("no network: %v, want a bad request", err)
	}
	if got := atGateway.list(); len(got) != 2 {
		t.Errorf("the gateway got %d requests, want 2", len(got))
	}
}

// The inner CONNECT's answer waits as long as a tunnel's answer does (ResponseTimeout), not the connect timeout
// that bounds the inner handshake: a destination may take its own connect timeout before it answers.
func TestDialDoubleWaitsForASlowAnswer(t *testing.T) {
	ca := newTestCA(t)
	echo := echoServer(t)
	dest, _ := testServer(t, ca, remoteID, func(_ context.Context, r *Request) decision {
		time.Sleep(2 * time.Second) // longer than the client's connect timeout
		return allow(echo)
	})
	gw, _ := testServer(t, ca, gatewayID, func(context.Context, *Request) decision { return allow(dest) })
	pool, outer, inner := doubleClient(t, ca, PoolConfig{ConnectTimeout: time.Second, ResponseTimeout: 10 * time.Second}, gw)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := pool.DialDouble(ctx, outer, inner, "network-a")
	if err != nil {
		t.Fatalf("DialDouble with an answer after 2 s (connect timeout 1 s, response timeout 10 s): %v", err)
	}
	_ = st.Close()
}

// doubleClient is a pool (cfg, with the test CA's client certificate for clientID) and the outer and inner tunnels
// of a double-HBONE call to the echo service through the gateway at gw.
func doubleClient(t *testing.T, ca *testCA, cfg PoolConfig, gw netip.AddrPort) (*Pool, Tunnel, Tunnel) {
	t.Helper()
	clientCert := ca.leaf(t, clientID)
	cfg.Telemetry = newRecorder()
	cfg.TLS = func(tn *Tunnel) (*tls.Config, error) {
		var want []string
		for _, id := range tn.Expected {
			want = append(want, id.String())
		}
		return ca.clientTLS(clientCert, want...), nil
	}
	pool := NewPool(cfg)
	t.Cleanup(func() { _ = pool.Close() })
	client := spiffeid.RequireFromString(clientID)
	authority := echoHost + ":80"
	outer := Tunnel{Source: client, Expected: []spiffeid.ID{spiffeid.RequireFromString(gatewayID)}, Gateway: gw, Authority: authority}
	inner := Tunnel{Source: client, Expected: []spiffeid.ID{spiffeid.RequireFromString(remoteID)}, Authority: authority}
	return pool, outer, inner
}
