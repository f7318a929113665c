package proxy

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// connPair returns the two ends of a real connection on a listener of network
// at addr.
func connPair(t *testing.T, network, addr string) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c, <-ch
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) { return connPair(t, "tcp", "127.0.0.1:0") }

// client <-> [down | relay | up] <-> server: half-close travels through and the
// other direction keeps flowing.
func TestRelayHalfClose(t *testing.T) {
	client, down := tcpPair(t)
	up, server := tcpPair(t)
	done := make(chan Bytes, 1)
	go func() {
		b, _ := relay(down, up, nil)
		done <- b
	}()
	req := bytes.Repeat([]byte("q"), 100000)
	if _, err := client.Write(req); err != nil {
		t.Fatal(err)
	}
	client.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(server)
	if err != nil || !bytes.Equal(got, req) {
		t.Fatalf("server read %d bytes, err %v", len(got), err)
	}
	// The server answers after the client's half-close.
	resp := bytes.Repeat([]byte("r"), 50000)
	if _, err := server.Write(resp); err != nil {
		t.Fatal(err)
	}
	server.Close()
	got, err = io.ReadAll(client)
	if err != nil || !bytes.Equal(got, resp) {
		t.Fatalf("client read %d bytes, err %v", len(got), err)
	}
	select {
	case b := <-done:
		if b.Sent != int64(len(req)) || b.Received != int64(len(resp)) {
			t.Errorf("counted %+v", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not end")
	}
	client.Close()
}

// unixPair returns the two ends of a unix stream connection: a net.Conn that
// half-closes like an HBONE stream but is not TCP, so relay copies into it
// with bufcopy.FromTCP.
func unixPair(t *testing.T) (net.Conn, net.Conn) {
	return connPair(t, "unix", filepath.Join(t.TempDir(), "s"))
}

// Through the pooled copy (into a connection that is not TCP): every byte
// arrives in order, half-close travels through and the counts are right.
func TestRelayIntoTunnelLikeConn(t *testing.T) {
	client, down := tcpPair(t)
	up, server := unixPair(t)
	done := make(chan Bytes, 1)
	go func() {
		b, _ := relay(down, up, newBufPool())
		done <- b
	}()
	req := make([]byte, 3<<20+17)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range req {
		req[i] = byte(rng.Uint32())
	}
	go func() {
		// Writes of every size, with pauses, so that reads are full, partial and would block.
		for i, off := 0, 0; off < len(req); i++ {
			n := min(len(req)-off, []int{1, 100, 4096, 4097, 70000, 1 << 20}[i%6])
			if _, err := client.Write(req[off : off+n]); err != nil {
				return
			}
			off += n
			if i%5 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		client.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(server)
	if err != nil || !bytes.Equal(got, req) {
		t.Fatalf("server read %d of %d bytes (equal %v), err %v", len(got), len(req), bytes.Equal(got, req), err)
	}
	resp := bytes.Repeat([]byte("r"), 50000)
	if _, err := server.Write(resp); err != nil {
		t.Fatal(err)
	}
	server.Close()
	got, err = io.ReadAll(client)
	if err != nil || !bytes.Equal(got, resp) {
		t.Fatalf("client read %d bytes, err %v", len(got), err)
	}
	select {
	case b := <-done:
		if b.Sent != int64(len(req)) || b.Received != int64(len(resp)) {
			t.Errorf("counted %+v", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not end")
	}
	client.Close()
}

// A copy into a tunnel waits on an idle connection without a buffer: it
// borrows one only to read what has arrived.
func TestRelayIntoTunnelHoldsNoBufferWhileIdle(t *testing.T) {
	client, down := tcpPair(t)
	up, server := unixPair(t)
	bufs := newBufPool()
	done := make(chan struct{})
	go func() {
		relay(down, up, bufs)
		close(done)
	}()
	for range 3 {
		if _, err := client.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(server, got); err != nil || string(got) != "hello" {
			t.Fatalf("server read %q, %v", got, err)
		}
		// The copy gives its buffer back once it is waiting again, which on a
		// loaded machine may be a while after the server read the bytes.
		for deadline := time.Now().Add(5 * time.Second); bufs.Lent() != 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if n := bufs.Lent(); n != 0 {
			t.Fatalf("%d buffers held by an idle copy", n)
		}
	}
	client.Close()
	server.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not end")
	}
	if n := bufs.Lent(); n != 0 {
		t.Fatalf("%d buffers not given back", n)
	}
}

// A copy that ended cleanly toward a peer that has already reset the connection (it closed with our bytes
// unread, as a server that answered and closed does) is not a failure: the half-close finds nothing to tell.
func TestFinishPipeToAPeerThatReset(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	dst, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	peer := <-accepted
	if _, err := dst.Write([]byte("never read")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	peer.Close() // unread bytes: the kernel resets the connection
	_ = dst.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := dst.Read(make([]byte, 1)); err == nil {
		t.Fatal("the peer's reset did not arrive")
	}
	src, other := net.Pipe()
	defer other.Close()
	if err := finishPipe(dst, src, nil); err != nil {
		t.Errorf("finishPipe after the peer's reset: %v, want nil", err)
	}
}
