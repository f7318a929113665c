package bufcopy

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// A Conn carries bytes exactly, waits for room when the peer does not read (a 16 MiB write:
// more than the socket buffers hold), and reports the end of stream as io.EOF.
func TestConnCarriesBytesAndWaitsForRoom(t *testing.T) {
	a, b := tcpPair(t)
	ca, err := NewConn(a)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := NewConn(b)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 16<<20)
	_, _ = rand.Read(want)
	werr := make(chan error, 1)
	go func() {
		n, err := ca.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		if err == nil {
			err = ca.CloseWrite()
		}
		werr <- err
	}()
	time.Sleep(50 * time.Millisecond) // the writer fills the buffers and waits
	got, err := io.ReadAll(cb)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d written", len(got), len(want))
	}
	if n, err := cb.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("read after the end: %d, %v; want 0, io.EOF", n, err)
	}
}

// Deadlines, a closed connection and a reset peer give the errors net.TCPConn gives.
func TestConnErrorsAreTheTCPConnsOnes(t *testing.T) {
	a, b := tcpPair(t)
	ca, _ := NewConn(a)

	_ = ca.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := ca.Read(make([]byte, 10))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v; want a timeout", err)
	}
	_ = ca.SetReadDeadline(time.Time{})

	// The peer resets: an RST arrives (SO_LINGER 0 and close), and the read reports ECONNRESET.
	_ = b.SetLinger(0)
	_, _ = b.Write([]byte("x"))
	buf := make([]byte, 1)
	if _, err := io.ReadFull(ca, buf); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, err = ca.Read(buf)
		if err != nil || time.Now().After(deadline) {
			break
		}
	}
	var oe *net.OpError
	if !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("read after the peer's reset: %v; want a read OpError with ECONNRESET", err)
	}

	_ = ca.Close()
	if _, err := ca.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on a closed connection: %v; want net.ErrClosed", err)
	}
	if _, err := ca.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed connection: %v; want net.ErrClosed", err)
	}
}

// A Read or Write on a Conn allocates nothing.
func TestConnAllocatesNothing(t *testing.T) {
	a, b := tcpPair(t)
	ca, _ := NewConn(a)
	cb, _ := NewConn(b)
	msg := make([]byte, 1024)
	in := make([]byte, 1024)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := ca.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(cb, in); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per write and read; want 0", allocs)
	}
}

// Wrap leaves what is not a TCP connection alone.
func TestWrapOnlyTCP(t *testing.T) {
	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	if Wrap(p) != p {
		t.Fatal("Wrap changed a pipe")
	}
	a, _ := tcpPair(t)
	if _, ok := Wrap(a).(*Conn); !ok {
		t.Fatal("Wrap did not wrap a TCP connection")
	}
}
