package hbone

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// expectClosed reads from c until the server closes it, failing if that takes longer than within.
func expectClosed(t *testing.T, c net.Conn, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(within))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", within)
	}
	return time.Since(start)
}

// TestBadInput: garbage, HTTP/1.1, oversized headers and stalled clients get an answer or a closed connection,
// never a panic, a hang or a connection to anywhere; the server keeps serving afterwards.
func TestBadInput(t *testing.T) {
	const timeout = 300 * time.Millisecond
	dials := &dialLog{}
	h := newHarness(t, harnessOpts{
		server: func(c *ServerConfig) {
			c.HandshakeTimeout = timeout
			c.HeaderTimeout = timeout
		},
		handler: func(h *testHandler) { h.dialer = &net.Dialer{Control: dials.control} },
	})
	echo := echoServer(t)
	rawTCP := func(t *testing.T) net.Conn {
		c, err := net.Dial("tcp", h.srvAddr.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	rawTLS := func(t *testing.T) *tls.Conn {
		c, err := tls.Dial("tcp", h.srvAddr.String(), h.ca.clientTLS(h.ca.leaf(t, clientID), serverID))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}

	t.Run("garbage bytes", func(t *testing.T) {
		c := rawTCP(t)
		junk := make([]byte, 4096)
		_, _ = rand.Read(junk)
		_, _ = c.Write(junk)
		expectClosed(t, c, 5*time.Second)
	})
	t.Run("HTTP/1.1 in plaintext", func(t *testing.T) {
		c := rawTCP(t)
		_, _ = c.Write([]byte("CONNECT 127.0.0.1:15000 HTTP/1.1\r\nHost: 127.0.0.1:15000\r\n\r\n"))
		expectClosed(t, c, 5*time.Second)
	})
	t.Run("HTTP/1.1 inside TLS", func(t *testing.T) {
		c := rawTLS(t)
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		expectClosed(t, c, 5*time.Second)
	})
	t.Run("client without a certificate", func(t *testing.T) {
		cfg := h.ca.clientTLS(h.ca.leaf(t, clientID), serverID)
		cfg.Certificates = nil
		c, err := tls.Dial("tcp", h.srvAddr.String(), cfg)
		if err == nil { // TLS 1.3: the client learns of the refusal on its first read
			_, err = c.Read(make([]byte, 1))
			_ = c.Close()
		}
		if err == nil {
			t.Fatal("server accepted a client without a certificate")
		}
	})
	t.Run("stalled before the handshake", func(t *testing.T) {
		c := rawTCP(t)
		if d := expectClosed(t, c, 5*time.Second); d < timeout/2 {
			t.Errorf("closed after %v, before the %v handshake timeout", d, timeout)
		}
	})
	t.Run("stalled after the handshake", func(t *testing.T) {
		c := rawTLS(t)
		if d := expectClosed(t, c, 5*time.Second); d < timeout/2 {
			t.Errorf("closed after %v, before the %v header timeout", d, timeout)
		}
	})
	t.Run("stalled in the middle of the preface", func(t *testing.T) {
		c := rawTLS(t)
		_, _ = c.Write([]byte(http2.ClientPreface[:10]))
		expectClosed(t, c, 5*time.Second)
	})
	t.Run("1 MiB header value", func(t *testing.T) {
		rc := dialRaw(t, h)
		_, _, err := rc.awaitStatus(rc.connect(echo.String(), "x-huge", strings.Repeat("h", 1<<20)))
		if !errors.Is(err, errGoneAway) {
			t.Fatalf("got %v, want the connection closed", err)
		}
	})
	t.Run("1 MiB of headers in CONTINUATIONs", func(t *testing.T) {
		rc := dialRaw(t, h)
		_, _, err := rc.awaitStatus(rc.connect(echo.String(), bigHeaders(256, 4<<10)...))
		if !errors.Is(err, errGoneAway) {
			t.Fatalf("got %v, want the connection closed", err)
		}
	})
	t.Run("frame before SETTINGS", func(t *testing.T) {
		c := rawTLS(t)
		_, _ = c.Write([]byte(http2.ClientPreface))
		fr := http2.NewFramer(c, c)
		_ = fr.WritePing(false, [8]byte{})
		expectClosed(t, c, 5*time.Second)
	})
	t.Run("DATA on a stream never opened", func(t *testing.T) {
		rc := dialRaw(t, h)
		_ = rc.fr.WriteData(7, false, []byte("x"))
		if _, _, err := rc.awaitStatus(7); !errors.Is(err, errGoneAway) {
			t.Fatalf("got %v, want GOAWAY", err)
		}
	})
	t.Run("stream IDs going backwards", func(t *testing.T) {
		rc := dialRaw(t, h)
		rc.next = 5
		if st, _, err := rc.awaitStatus(rc.connect(echo.String())); err != nil || st != 200 {
			t.Fatalf("first stream: %d %v", st, err)
		}
		rc.next = 3
		if _, _, err := rc.awaitStatus(rc.connect(echo.String())); !errors.Is(err, errGoneAway) {
			t.Fatalf("got %v, want GOAWAY", err)
		}
	})
	t.Run("flow-control violation", func(t *testing.T) {
		rc := dialRaw(t, h)
		id := rc.connect(echo.String())
		if st, _, err := rc.awaitStatus(id); err != nil || st != 200 {
			t.Fatalf("status %d %v", st, err)
		}
		// 20 MiB at once: more than the 16 MiB connection window.
		chunk := make([]byte, 1<<20-1)
		var err error
		for i := 0; i < 20 && err == nil; i++ {
			err = rc.fr.WriteData(id, false, chunk)
		}
		f, rerr := rc.awaitFrame(func(f http2.Frame) bool {
			_, ok := f.(*http2.GoAwayFrame)
			_, rst := f.(*http2.RSTStreamFrame)
			return ok || rst
		})
		if rerr == nil {
			switch f := f.(type) {
			case *http2.GoAwayFrame:
				if f.ErrCode != http2.ErrCodeFlowControl {
					t.Errorf("GOAWAY %v, want FLOW_CONTROL_ERROR", f.ErrCode)
				}
			case *http2.RSTStreamFrame:
				if f.ErrCode != http2.ErrCodeFlowControl {
					t.Errorf("RST_STREAM %v, want FLOW_CONTROL_ERROR", f.ErrCode)
				}
			}
		}
	})

	// After all of it, the server still works, and it never dialed anything but the echo target.
	st := h.dial(t, echo)
	if _, err := st.Write([]byte("still alive")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(st, make([]byte, 11)); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	for _, a := range dials.list() {
		if a != echo.String() {
			t.Errorf("server dialed %s", a)
		}
	}
}

// TestStreamLimit: streams beyond the server's concurrency limit are refused with REFUSED_STREAM, and the
// connection survives; the streams it kept are answered normally.
func TestStreamLimit(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, harnessOpts{
		server: func(c *ServerConfig) { c.MaxConcurrentStreams = 3 },
		authorize: func(ctx context.Context, req *Request) decision {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return deny(FlagDenied, nil)
		},
	})
	rc := dialRaw(t, h)
	kept := map[uint32]bool{}
	for range 3 {
		kept[rc.connect("127.0.0.1:80")] = true
	}
	fourth := rc.connect("127.0.0.1:80")
	f, err := rc.awaitFrame(func(f http2.Frame) bool {
		rst, ok := f.(*http2.RSTStreamFrame)
		return ok && rst.StreamID == fourth
	})
	if err != nil {
		t.Fatalf("fourth stream: %v", err)
	}
	if code := f.(*http2.RSTStreamFrame).ErrCode; code != http2.ErrCodeRefusedStream {
		t.Fatalf("fourth stream reset with %v, want REFUSED_STREAM", code)
	}
	close(release)
	for len(kept) > 0 {
		f, err := rc.awaitFrame(func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok })
		if err != nil {
			t.Fatalf("waiting for answers: %v", err)
		}
		mh := f.(*http2.MetaHeadersFrame)
		if !kept[mh.StreamID] || mh.PseudoValue("status") != "401" {
			t.Fatalf("stream %d answered %s", mh.StreamID, mh.PseudoValue("status"))
		}
		delete(kept, mh.StreamID)
	}
}
