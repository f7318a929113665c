package hbone

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

// WriteTo a socket: the read loop writes messages to it itself while the copier waits (direct.go), and falls back
// to the copier when the socket is full (a slow reader). Every byte arrives, in order, and WriteTo counts them all.
func TestWriteToASocketKeepsOrderAndCount(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	st := h.dial(t, echoServer(t))
	defer st.Close()

	ln := listenLoopback(t)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	sink, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	far := <-accepted
	defer far.Close()
	_ = sink.(*net.TCPConn).SetWriteBuffer(4096) // fills quickly: partial writes and EAGAIN happen

	type result struct {
		n   int64
		err error
	}
	copied := make(chan result, 1)
	go func() {
		n, err := st.WriteTo(sink)
		sink.(*net.TCPConn).CloseWrite()
		copied <- result{n, err}
	}()

	want := sha256.New()
	sent := make(chan int64, 1)
	go func() {
		var total int64
		defer func() { sent <- total }()
		for i := range 400 {
			size, _ := rand.Int(rand.Reader, big.NewInt(20000))
			msg := make([]byte, size.Int64()+1)
			_, _ = rand.Read(msg)
			if _, err := st.Write(msg); err != nil {
				t.Errorf("write %d: %v", i, err)
				return
			}
			want.Write(msg)
			total += int64(len(msg))
			if i%10 == 0 {
				time.Sleep(time.Millisecond) // the copier parks: the next message goes the direct way
			}
		}
		_ = st.CloseWrite()
	}()

	got := sha256.New()
	// A slow reader first, so that the sink fills up.
	time.Sleep(100 * time.Millisecond)
	_ = far.SetReadDeadline(time.Now().Add(60 * time.Second))
	n, err := io.Copy(got, far)
	if err != nil {
		t.Fatal(err)
	}
	r, total := <-copied, <-sent
	if r.err != nil {
		t.Fatalf("WriteTo: %v", r.err)
	}
	if n != total || r.n != total || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("the sink got %d bytes, WriteTo counted %d, %d were sent; checksums match: %v", n, r.n, total,
			bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
}
