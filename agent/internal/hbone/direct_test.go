package hbone

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"math/big"
	"net"
	"runtime/pprof"
	"strings"
	"testing"
	"time"
)

// WriteTo a socket: the read loop writes messages to it itself while the copier waits (direct.go), and falls back
// to the copier when the socket is full (a slow reader). Every byte arrives, in order, and WriteTo counts them all.
// WriteToAsync the same, with a copier goroutine that starts and ends as the socket fills and drains.
func TestWriteToASocketKeepsOrderAndCount(t *testing.T) {
	t.Run("WriteTo", func(t *testing.T) {
		testWriteToSocket(t, func(st *Stream, w io.Writer, done func(int64, error)) {
			go func() { done(st.WriteTo(w)) }()
		})
	})
	t.Run("WriteToAsync", func(t *testing.T) { testWriteToSocket(t, (*Stream).WriteToAsync) })
}

func testWriteToSocket(t *testing.T, writeTo func(*Stream, io.Writer, func(int64, error))) {
	h := newHarness(t, harnessOpts{})
	st := h.dial(t, echoServer(t))
	defer st.Close()

	sink, far := tcpPair(t)
	_ = sink.(*net.TCPConn).SetWriteBuffer(4096) // fills quickly: partial writes and EAGAIN happen

	type result struct {
		n   int64
		err error
	}
	copied := make(chan result, 1)
	writeTo(st, sink, func(n int64, err error) {
		sink.(*net.TCPConn).CloseWrite()
		copied <- result{n, err}
	})

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

// An idle tunnel copied with WriteToAsync holds no goroutine for that direction; its end, a local Close and a
// peer's reset each call done once, on a goroutine started for it.
func TestWriteToAsyncHoldsNoGoroutineWhileIdle(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	echo := echoServer(t)
	type result struct {
		n   int64
		err error
	}
	const tunnels = 10
	var (
		streams []*Stream
		sinks   []net.Conn
		results []chan result
	)
	for range tunnels {
		st := h.dial(t, echo)
		sink, far := tcpPair(t)
		done := make(chan result, 2)
		st.WriteToAsync(sink, func(n int64, err error) { done <- result{n, err} })
		msg := []byte("one exchange, then idle")
		if _, err := st.Write(msg); err != nil {
			t.Fatal(err)
		}
		_ = far.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(far, make([]byte, len(msg))); err != nil {
			t.Fatalf("the echo did not reach the sink: %v", err)
		}
		streams, sinks, results = append(streams, st), append(sinks, far), append(results, done)
	}
	if n := goroutinesIn("(*Stream).copyAsync"); n != 0 {
		t.Errorf("%d copier goroutines for %d idle tunnels, want 0", n, tunnels)
	}

	// The end of the stream: done with the count and no error.
	_ = streams[0].CloseWrite() // the echo server ends its side in turn
	if r := waitResult(t, results[0]); r.err != nil || r.n != int64(len("one exchange, then idle")) {
		t.Errorf("after END_STREAM: done(%d, %v), want (23, nil)", r.n, r.err)
	}
	// A local Close: done with net.ErrClosed.
	_ = streams[1].Close()
	if r := waitResult(t, results[1]); !errors.Is(r.err, net.ErrClosed) {
		t.Errorf("after Close: done(%d, %v), want net.ErrClosed", r.n, r.err)
	}
	// The connection fails: every other tunnel's done reports it.
	streams[2].c.nc.Close()
	for i := 2; i < tunnels; i++ {
		if r := waitResult(t, results[i]); r.err == nil {
			t.Errorf("tunnel %d: done(%d, nil) after its connection failed", i, r.n)
		}
	}
	for i, done := range results {
		select {
		case r := <-done:
			t.Errorf("tunnel %d: done called twice (%d, %v)", i, r.n, r.err)
		default:
		}
	}
	for _, c := range sinks {
		c.Close()
	}
}

func waitResult[T any](t *testing.T, ch chan T) T {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("done was not called")
	}
	panic("unreachable")
}

// goroutinesIn counts the goroutines with fn on their stack.
func goroutinesIn(fn string) int {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// tcpPair is two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln := listenLoopback(t)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}
