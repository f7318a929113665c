package proxy

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// tcpPair returns the two ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c, <-ch
}

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
// with copyAdaptive.
func unixPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c, <-ch
}

// Through the adaptive copy (into a connection that is not TCP): every byte
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
		// Writes of every size, with pauses, so that reads are full and partial.
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

// scriptedReader returns the given read sizes in turn (bounded by the buffer)
// and records the size of every buffer it was handed.
type scriptedReader struct {
	sizes []int
	bufs  []int
}

func (r *scriptedReader) Read(p []byte) (int, error) {
	r.bufs = append(r.bufs, len(p))
	if len(r.sizes) == 0 {
		return 0, io.EOF
	}
	n := min(r.sizes[0], len(p))
	r.sizes = r.sizes[1:]
	return n, nil
}

// A copy waits on an idle source with the small buffer only: it borrows a
// large one after a full small read and returns it after the first read that
// does not fill it.
func TestCopyAdaptiveHoldsLargeBufferOnlyWhileBusy(t *testing.T) {
	r := &scriptedReader{sizes: []int{100, smallBuf, largeBuf, largeBuf, 10, 200, smallBuf, 5}}
	var out bytes.Buffer
	n, err := copyAdaptive(&out, r, newBufPool())
	if err != nil {
		t.Fatal(err)
	}
	want := []int{smallBuf, smallBuf, largeBuf, largeBuf, largeBuf, smallBuf, smallBuf, largeBuf, smallBuf}
	if !slices.Equal(r.bufs, want) {
		t.Errorf("buffers handed to Read: %v, want %v", r.bufs, want)
	}
	if total := 100 + smallBuf + 2*largeBuf + 10 + 200 + smallBuf + 5; n != int64(total) || out.Len() != total {
		t.Errorf("copied %d (buffer %d), want %d", n, out.Len(), total)
	}
}

// shortWriter accepts at most half of every write, without an error.
type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, nil }

func TestCopyAdaptiveShortWrite(t *testing.T) {
	if _, err := copyAdaptive(shortWriter{}, bytes.NewReader(make([]byte, 100)), newBufPool()); err != io.ErrShortWrite {
		t.Fatalf("err %v, want io.ErrShortWrite", err)
	}
}
