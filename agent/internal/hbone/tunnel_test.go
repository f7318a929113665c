package hbone

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

func TestTunnelEcho(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	echo := echoServer(t)
	st := h.dial(t, echo)
	if got := st.PeerIdentity().String(); got != serverID {
		t.Errorf("peer identity %q, want %q", got, serverID)
	}
	msg := []byte("hello through the mesh")
	if _, err := st.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(st, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, msg) {
		t.Fatalf("echo %q, want %q", buf, msg)
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest := readAll(t, st); len(rest) != 0 {
		t.Fatalf("unexpected bytes after half-close: %q", rest)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	h.srvTel.waitFor(t, "server TunnelClosed", func(r *recorder) bool { return len(r.closed) == 1 })
	h.cliTel.waitFor(t, "client TunnelClosed", func(r *recorder) bool { return len(r.closed) == 1 })
	srv, cli := h.srvTel.closed[0], h.cliTel.closed[0]
	if srv.Flag != FlagNone || cli.Flag != FlagNone {
		t.Errorf("flags server %v (%v) client %v (%v), want none", srv.Flag, srv.Err, cli.Flag, cli.Err)
	}
	n := int64(len(msg))
	if srv.BytesReceived != n || srv.BytesSent != n || cli.BytesSent != n || cli.BytesReceived != n {
		t.Errorf("bytes server %d/%d client %d/%d, want %d everywhere", srv.BytesReceived, srv.BytesSent, cli.BytesSent, cli.BytesReceived, n)
	}
	info := h.srvTel.opened[0]
	if info.Peer.String() != clientID || info.Direction != Inbound || info.Target != echo || info.Authority != echo.String() {
		t.Errorf("server tunnel info %+v", info)
	}
}

// TestHalfCloseBothWays: each side's end of stream reaches the other while the opposite direction keeps flowing.
func TestHalfCloseBothWays(t *testing.T) {
	h := newHarness(t, harnessOpts{})

	t.Run("client first", func(t *testing.T) {
		// The target reads until EOF, then answers with what it got, reversed, and closes.
		target := tcpServer(t, func(c *net.TCPConn) {
			got, err := io.ReadAll(c)
			if err != nil {
				return
			}
			for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
				got[i], got[j] = got[j], got[i]
			}
			_, _ = c.Write(got)
		})
		st := h.dial(t, target)
		defer st.Close()
		if _, err := st.Write([]byte("abcdef")); err != nil {
			t.Fatal(err)
		}
		if err := st.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, st); string(got) != "fedcba" {
			t.Fatalf("got %q after half-close, want %q", got, "fedcba")
		}
	})

	t.Run("server first", func(t *testing.T) {
		// The target sends a greeting and half-closes, then reads everything and reports its length.
		lenCh := make(chan int, 1)
		target := tcpServer(t, func(c *net.TCPConn) {
			_, _ = c.Write([]byte("greeting"))
			_ = c.CloseWrite()
			got, _ := io.ReadAll(c)
			lenCh <- len(got)
		})
		st := h.dial(t, target)
		defer st.Close()
		if got := readAll(t, st); string(got) != "greeting" {
			t.Fatalf("got %q, want greeting then EOF", got)
		}
		// Our direction still works after the server's END_STREAM.
		payload := bytes.Repeat([]byte("x"), 100000)
		if _, err := st.Write(payload); err != nil {
			t.Fatalf("write after the peer's half-close: %v", err)
		}
		if err := st.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		select {
		case n := <-lenCh:
			if n != len(payload) {
				t.Fatalf("target got %d bytes, want %d", n, len(payload))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("target never saw EOF")
		}
	})
}

// TestBulkBothWays pushes 64 MiB each way at once through one tunnel: flow control and window updates must keep
// both directions moving (no deadlock) and every byte must arrive intact.
func TestBulkBothWays(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.dial(t, echoServer(t))
	defer st.Close()
	const size = 64 << 20
	src := make([]byte, 1<<20)
	_, _ = rand.Read(src)
	want := sha256.New()
	var wg sync.WaitGroup
	wg.Add(1)
	var werr error
	go func() {
		defer wg.Done()
		for sent := 0; sent < size; sent += len(src) {
			if _, err := st.Write(src); err != nil {
				werr = err
				return
			}
			want.Write(src)
		}
		werr = st.CloseWrite()
	}()
	got := sha256.New()
	_ = st.SetReadDeadline(time.Now().Add(60 * time.Second))
	n, err := io.Copy(got, st)
	wg.Wait()
	if err != nil || werr != nil {
		t.Fatalf("read err %v, write err %v", err, werr)
	}
	if n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("echoed %d bytes (checksum match %v), want %d", n, bytes.Equal(got.Sum(nil), want.Sum(nil)), size)
	}
}

func TestReadDeadline(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.dial(t, echoServer(t))
	defer st.Close()
	_ = st.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := st.Read(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	// Clearing the deadline makes the stream usable again.
	_ = st.SetReadDeadline(time.Time{})
	if _, err := st.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("after clearing the deadline: %q %v", buf, err)
	}
}

// TestIdleInboundTunnelsHoldNoBuffer: once an exchange is over, an open tunnel to a TCP upstream holds none of
// the server's 64 KiB buffers (its upstream read borrows one only while data arrives).
func TestIdleInboundTunnelsHoldNoBuffer(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	echo := echoServer(t)
	var streams []*Stream
	for range 20 {
		st := h.dial(t, echo)
		streams = append(streams, st)
		msg := []byte("one exchange, then idle")
		if _, err := st.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(st, make([]byte, len(msg))); err != nil {
			t.Fatal(err)
		}
	}
	h.srvTel.waitFor(t, "20 tunnels open", func(r *recorder) bool { return len(r.opened) == 20 })
	lent := h.srv.bufs.Lent()
	for deadline := time.Now().Add(5 * time.Second); lent != 0 && time.Now().Before(deadline); lent = h.srv.bufs.Lent() {
		time.Sleep(10 * time.Millisecond)
	}
	if lent != 0 {
		t.Errorf("the server holds %d buffers for 20 idle tunnels, want 0", lent)
	}
	for _, st := range streams {
		_ = st.Close()
	}
}
