package interop

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	istiohbone "istio.io/istio/pkg/hbone"
	istiolog "istio.io/istio/pkg/log"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
)

const (
	clientID = "spiffe://cluster.local/ns/default/sa/client"
	serverID = "spiffe://cluster.local/ns/default/sa/server"
)

func quietIstio() {
	if s := istiolog.FindScope("hbone"); s != nil {
		s.SetOutputLevel(istiolog.WarnLevel)
	}
}

// tcpServer runs handle for each connection on a loopback listener; everything is joined at cleanup.
func tcpServer(t *testing.T, handle func(*net.TCPConn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("loopback listener: %v", err) // never skipped: CI must not pass without running this
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					_ = c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// echo echoes and half-closes once the client did.
func echo(c *net.TCPConn) {
	_, _ = io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
	_ = c.CloseWrite()
}

// loopbackHandler relays every request for a loopback target, after telling seen of it, and refuses the rest.
type loopbackHandler func(req *hbone.Request)

func (seen loopbackHandler) ServeHBONE(r *hbone.Request) {
	seen(r)
	if !r.Target.Addr.Addr().IsLoopback() {
		r.Refuse(hbone.FlagWrongTarget, errors.New("not local"))
		return
	}
	up, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(r.Context(), "tcp", r.Target.Addr.String())
	if err != nil {
		r.RefuseDial(r.Target.Addr, err)
		return
	}
	defer up.Close()
	if r.Accept(hbone.Baggage{}) == nil {
		r.Relay(up, nil)
	}
}

func (loopbackHandler) Refused(*hbone.TunnelInfo, hbone.Flag, error) {}

// TestIstioDialerThroughOurServer: Istio's HBONE dialer (Go http2 Transport, CONNECT) tunnels through our
// server to TCP targets, in both directions, with each side's end of stream reaching the other.
func TestIstioDialerThroughOurServer(t *testing.T) {
	quietIstio()
	ca := newTestCA(t)
	var mu sync.Mutex
	var peers []string
	serverTLS := ca.serverTLS(ca.leaf(t, serverID))
	srv, err := hbone.NewServer(hbone.ServerConfig{
		Certificate: func(netip.Addr, string) (spiffeid.ID, *tls.Config, error) {
			return spiffeid.RequireFromString(serverID), serverTLS, nil
		},
		Handler: loopbackHandler(func(req *hbone.Request) {
			mu.Lock()
			peers = append(peers, req.PeerIdentity.String())
			mu.Unlock()
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	dialer := istiohbone.NewDialer(istiohbone.Config{
		ProxyAddress: ln.Addr().String(),
		TLS:          ca.clientTLS(ca.leaf(t, clientID), serverID),
	})
	dial := func(t *testing.T, target netip.AddrPort) net.Conn {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := dialer.DialContext(ctx, "tcp", target.String())
		if err != nil {
			t.Fatalf("istio dialer: %v", err)
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		return c
	}

	t.Run("echo both ways, 8 MiB", func(t *testing.T) {
		c := dial(t, tcpServer(t, echo))
		defer c.Close()
		payload := make([]byte, 8<<20)
		_, _ = rand.Read(payload)
		werr := make(chan error, 1)
		go func() { _, err := c.Write(payload); werr <- err }()
		got := make([]byte, len(payload))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("read echo: %v", err)
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatal("echo differs")
		}
	})

	t.Run("target ends first", func(t *testing.T) {
		gotEOF := make(chan struct{})
		target := tcpServer(t, func(c *net.TCPConn) {
			_, _ = c.Write([]byte("greeting"))
			_ = c.CloseWrite()
			if _, err := io.ReadAll(c); err == nil {
				close(gotEOF)
			}
		})
		c := dial(t, target)
		defer c.Close()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "greeting" {
			t.Fatalf("read %q, %v; want greeting then EOF (our END_STREAM)", got, err)
		}
		select {
		case <-gotEOF: // Istio's dialer ended its side once ours ended, and we passed it on
		case <-time.After(10 * time.Second):
			t.Fatal("target never saw the client's end of stream")
		}
	})

	t.Run("client ends first", func(t *testing.T) {
		got := make(chan []byte, 1)
		target := tcpServer(t, func(c *net.TCPConn) {
			b, _ := io.ReadAll(c) // returns at the client's END_STREAM, passed on as our CloseWrite
			got <- b
		})
		c := dial(t, target)
		payload := bytes.Repeat([]byte("0123456789"), 100000)
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		_ = c.Close() // the only way to end the request body with Istio's dialer
		select {
		case b := <-got:
			if !bytes.Equal(b, payload) {
				t.Fatalf("target got %d bytes, want %d", len(b), len(payload))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("target never saw EOF")
		}
	})

	t.Run("refused target", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := dialer.DialContext(ctx, "tcp", "10.255.255.1:80")
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte("400")) {
			t.Fatalf("dial to a non-local target: %v, want a 400", err)
		}
	})

	mu.Lock()
	defer mu.Unlock()
	for _, p := range peers {
		if p != clientID {
			t.Errorf("server saw peer %q, want %q", p, clientID)
		}
	}
}

// TestOurClientThroughIstioServer: our pooled client tunnels through Istio's HBONE server (net/http with
// HTTP/2 over TLS, ALPN h2) to TCP targets.
func TestOurClientThroughIstioServer(t *testing.T) {
	quietIstio()
	ca := newTestCA(t)
	isrv := istiohbone.NewServer()
	if isrv.Protocols == nil {
		isrv.Protocols = new(http.Protocols)
	}
	isrv.Protocols.SetHTTP2(true) // NewServer enables HTTP/1 and h2c only; HBONE is h2 over TLS
	isrv.TLSConfig = ca.serverTLS(ca.leaf(t, serverID))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- isrv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		_ = isrv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("istio server: %v", err)
		}
	})

	clientCert := ca.leaf(t, clientID)
	pool := hbone.NewPool(hbone.PoolConfig{TLS: func(*hbone.Tunnel) (*tls.Config, error) { return ca.clientTLS(clientCert, serverID), nil }})
	t.Cleanup(func() { _ = pool.Close() })
	dial := func(t *testing.T, target netip.AddrPort) *hbone.Stream {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := pool.Dial(ctx, hbone.Tunnel{
			Source:       spiffeid.RequireFromString(clientID),
			Expected:     []spiffeid.ID{spiffeid.RequireFromString(serverID)},
			Gateway:      ln.Addr().(*net.TCPAddr).AddrPort(),
			Authority:    target.String(),
			Baggage:      hbone.Baggage{Namespace: "default", WorkloadName: "client"},
			ForwardedFor: netip.MustParseAddrPort("10.0.0.9:40000"),
		})
		if err != nil {
			t.Fatalf("our client via istio server: %v", err)
		}
		_ = st.SetDeadline(time.Now().Add(20 * time.Second))
		return st
	}

	t.Run("echo both ways, 8 MiB", func(t *testing.T) {
		st := dial(t, tcpServer(t, echo))
		defer st.Close()
		if st.PeerIdentity().String() != serverID {
			t.Errorf("peer %s", st.PeerIdentity())
		}
		payload := make([]byte, 8<<20)
		_, _ = rand.Read(payload)
		werr := make(chan error, 1)
		go func() { _, err := st.Write(payload); werr <- err }()
		got := make([]byte, len(payload))
		if _, err := io.ReadFull(st, got); err != nil {
			t.Fatalf("read echo: %v", err)
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatal("echo differs")
		}
	})

	t.Run("client ends first", func(t *testing.T) {
		// The target reads to EOF (our END_STREAM, passed on by Istio as CloseWrite), answers, and closes.
		target := tcpServer(t, func(c *net.TCPConn) {
			b, err := io.ReadAll(c)
			if err != nil {
				return
			}
			_, _ = c.Write(append([]byte("got "), b...))
		})
		st := dial(t, target)
		defer st.Close()
		if _, err := st.Write([]byte("request")); err != nil {
			t.Fatal(err)
		}
		if err := st.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(st)
		if err != nil || string(got) != "got request" {
			t.Fatalf("read %q, %v; want the answer sent after our half-close, then EOF", got, err)
		}
	})

	t.Run("20 concurrent tunnels share the connection", func(t *testing.T) {
		target := tcpServer(t, echo)
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st := dial(t, target)
				defer st.Close()
				msg := []byte{byte(i), 'x', 'y'}
				if _, err := st.Write(msg); err != nil {
					errs <- err
					return
				}
				_ = st.CloseWrite()
				got, err := io.ReadAll(st)
				if err != nil || !bytes.Equal(got, msg) {
					errs <- errors.New("bad echo")
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		key := hbone.NewPoolKey(spiffeid.RequireFromString(clientID), []spiffeid.ID{spiffeid.RequireFromString(serverID)},
			ln.Addr().(*net.TCPAddr).AddrPort(), netip.MustParseAddr("10.0.0.9"))
		if n := pool.Conns(key); n != 1 {
			t.Errorf("%d connections for one key, want 1", n)
		}
	})
}
