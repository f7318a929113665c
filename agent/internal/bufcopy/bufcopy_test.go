package bufcopy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the client and server ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
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
	s := <-ch
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// countingWriter collects what the copy writes, for the test to read safely.
type countingWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *countingWriter) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Len()
}

// Every byte arrives in order, EOF ends the copy without an error, and once
// what was sent has been copied the copy waits holding no buffer.
func TestFromTCPCopiesAndHoldsNothingWhileIdle(t *testing.T) {
	client, server := tcpPair(t)
	p := NewPool(4096)
	out := &countingWriter{}
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := FromTCP(out, server, p)
		done <- result{n, err}
	}()
	want := bytes.Repeat([]byte("0123456789"), 1000) // 10,000 bytes: several reads of 4 KiB
	if _, err := client.Write(want); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); out.Len() < len(want) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if out.Len() != len(want) {
		t.Fatalf("copied %d of %d bytes", out.Len(), len(want))
	}
	// Everything was copied: the copy is (or is about to be) waiting for
	// readability, and must not hold a buffer while it waits.
	for deadline := time.Now().Add(5 * time.Second); p.Lent() != 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	for range 20 {
		if n := p.Lent(); n != 0 {
			t.Fatalf("%d buffers held by an idle copy", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if _, err := client.Write([]byte("end")); err != nil {
		t.Fatal(err)
	}
	client.CloseWrite()
	select {
	case r := <-done:
		want = append(want, "end"...)
		out.mu.Lock()
		got := out.buf.Bytes()
		out.mu.Unlock()
		if r.err != nil || r.n != int64(len(want)) || !bytes.Equal(got, want) {
			t.Fatalf("copied %d bytes (equal %v), err %v", r.n, bytes.Equal(got, want), r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("copy did not end at EOF")
	}
	if n := p.Lent(); n != 0 {
		t.Fatalf("%d buffers not given back", n)
	}
}

// A reset by the peer is an error of the copy, reported as the net package
// reports it; the buffer goes back.
func TestFromTCPReset(t *testing.T) {
	client, server := tcpPair(t)
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	client.SetLinger(0)
	client.Close()
	p := NewPool(64)
	var out bytes.Buffer
	n, err := FromTCP(&out, server, p)
	var oe *net.OpError
	if !errors.As(err, &oe) || !errors.Is(err, syscall.ECONNRESET) || oe.Op != "read" {
		t.Fatalf("copied %d, err %v: want a read OpError wrapping ECONNRESET", n, err)
	}
	if l := p.Lent(); l != 0 {
		t.Fatalf("%d buffers not given back", l)
	}
}

// shortWriter accepts at most half of every write, without an error.
type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, nil }

func TestFromTCPShortWrite(t *testing.T) {
	client, server := tcpPair(t)
	if _, err := client.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	client.Close()
	p := NewPool(64)
	if _, err := FromTCP(shortWriter{}, server, p); err != io.ErrShortWrite {
		t.Fatalf("err %v, want io.ErrShortWrite", err)
	}
	if l := p.Lent(); l != 0 {
		t.Fatalf("%d buffers not given back", l)
	}
}
