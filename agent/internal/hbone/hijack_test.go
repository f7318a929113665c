package hbone

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
)

// hijackHandler accepts every tunnel and serves it as an HTTP connection (HTTP/1.1 and h2c), as the waypoint's
// L7 server does.
type hijackHandler struct {
	revoker *Revoker
	srv     *http.Server
	conns   chan net.Conn
	mu      sync.Mutex
	stats   []TunnelStats
}

func (h *hijackHandler) ServeHBONE(r *Request) {
	if err := r.Accept(Baggage{}); err != nil {
		return
	}
	c, err := r.Hijack(h.revoker, func(s TunnelStats) {
		h.mu.Lock()
		h.stats = append(h.stats, s)
		h.mu.Unlock()
	})
	if err != nil {
		return
	}
	h.conns <- c
}

func (h *hijackHandler) Refused(*TunnelInfo, Flag, error) {}

type chanListener chan net.Conn

func (l chanListener) Accept() (net.Conn, error) {
	c, ok := <-l
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l chanListener) Close() error   { return nil }
func (l chanListener) Addr() net.Addr { return &net.TCPAddr{} }

// A hijacked tunnel carries an HTTP server's connection: several h2c requests on one tunnel, through a reverse
// proxy to an HTTP/1.1 backend, until it is revoked; its end is reported once.
func TestHijackServesHTTP2(t *testing.T) {
	ca := newTestCA(t)
	h := &hijackHandler{conns: make(chan net.Conn), revoker: &Revoker{}}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "HTTP/2.0 "+r.URL.Path)
	}))
	t.Cleanup(backend.Close)
	bu, _ := url.Parse(backend.URL)
	rp := &httputil.ReverseProxy{FlushInterval: -1, Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(bu) }}
	h.srv = &http.Server{Protocols: &protocols, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: time.Hour, Handler: rp}
	go func() { _ = h.srv.Serve(chanListener(h.conns)) }()
	srv, err := NewServer(ServerConfig{Certificate: staticCertificate(remoteID, ca.serverTLS(ca.leaf(t, remoteID))), Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	ln := listenLoopback(t)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	cert := ca.leaf(t, clientID)
	pool := NewPool(PoolConfig{Telemetry: newRecorder(), TLS: func(*Tunnel) (*tls.Config, error) { return ca.clientTLS(cert, remoteID), nil }})
	t.Cleanup(func() { _ = pool.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := pool.Dial(ctx, Tunnel{Source: spiffeid.RequireFromString(clientID), Expected: []spiffeid.ID{spiffeid.RequireFromString(remoteID)},
		Gateway: lnAddr(ln), Authority: "10.0.0.1:80"})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(st)
	if err != nil {
		t.Fatal(err)
	}
	for i, path := range []string{"/a", "/b", "/c"} {
		req, _ := http.NewRequest("GET", "http://svc"+path, nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "HTTP/2.0 "+path {
			t.Errorf("request %d: %q", i, body)
		}
	}
	// A revoked tunnel (a policy change) ends: the next request fails, and its end says why, once.
	h.revoker.Revoke()
	req, _ := http.NewRequest("GET", "http://svc/d", nil)
	if resp, err := cc.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Fatal("a request on a revoked tunnel succeeded")
	}
	_ = cc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		stats := append([]TunnelStats(nil), h.stats...)
		h.mu.Unlock()
		if len(stats) == 1 && stats[0].Flag == FlagRevoked && stats[0].BytesReceived > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hijacked tunnel's end: %+v, want one, revoked", stats)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
