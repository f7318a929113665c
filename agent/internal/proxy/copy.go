package proxy

import (
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/ambient-agent/ambient-agent/agent/internal/bufcopy"
)

// closeWriter is a connection that can half-close: TCP, and HBONE streams.
type closeWriter interface {
	CloseWrite() error
}

// Bytes counts what a relay carried.
type Bytes struct {
	Sent     int64 // from the downstream (client) side to the upstream
	Received int64 // from the upstream back to the downstream
}

// relay copies both ways until both directions end. EOF on one side becomes a
// half-close of the other, so the other direction keeps flowing; an error on
// either side closes both. It closes both connections before returning.
// Copies from TCP into a connection that is not TCP (an HBONE stream) borrow
// their buffers from bufs (bufcopy.FromTCP); with bufs nil every copy is io.Copy.
func relay(down, up net.Conn, bufs *bufcopy.Pool) (Bytes, error) {
	var (
		b    Bytes
		errs [2]error
		recv = make(chan error, 1)
	)
	if a, ok := up.(asyncWriterTo); ok {
		// An HBONE stream: its read loop writes to down itself, no goroutine waits for the tunnel's bytes.
		a.WriteToAsync(down, func(n int64, err error) {
			b.Received = n
			recv <- finishPipe(down, up, err)
		})
	} else {
		go func() {
			var err error
			b.Received, err = pipe(down, up, bufs)
			recv <- err
		}()
	}
	b.Sent, errs[0] = pipe(up, down, bufs)
	errs[1] = <-recv
	down.Close()
	up.Close()
	return b, errors.Join(errs[0], errs[1])
}

// asyncWriterTo copies itself to w without a goroutine of the caller's (hbone.Stream.WriteToAsync); done runs
// once, at the end.
type asyncWriterTo interface {
	WriteToAsync(w io.Writer, done func(int64, error))
}

// pipe copies src to dst, then half-closes dst. On an error it aborts both so
// that the other direction stops too and a TCP end learns of the failure by a
// reset rather than a clean close. io.Copy lets TCP-to-TCP use splice, and a
// stream-to-TCP copy writes straight from the stream's receive buffers.
func pipe(dst, src net.Conn, bufs *bufcopy.Pool) (int64, error) {
	var (
		n   int64
		err error
	)
	srcTCP, fromTCP := src.(*net.TCPConn)
	if _, toTCP := dst.(*net.TCPConn); bufs != nil && fromTCP && !toTCP {
		n, err = bufcopy.FromTCP(dst, srcTCP, bufs)
	} else {
		n, err = io.Copy(dst, src)
	}
	return n, finishPipe(dst, src, err)
}

// finishPipe ends a copy from src to dst that returned err: a half-close of dst after a clean end, else an abort
// of both.
func finishPipe(dst, src net.Conn, err error) error {
	if err == nil {
		cw, ok := dst.(closeWriter)
		if !ok {
			dst.Close()
			return nil
		}
		// A peer that already closed both ways (ENOTCONN) has nothing left to be told.
		if err = cw.CloseWrite(); errors.Is(err, syscall.ENOTCONN) {
			err = nil
		}
	}
	if err != nil {
		abort(dst)
		abort(src)
	}
	return err
}

// abort closes c; a TCP connection is reset (SO_LINGER 0).
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// pooledBuf is the size of the buffers copies from TCP into tunnels borrow: one DATA frame of four full TLS
// records per read, as the stream's own ReadFrom uses.
const pooledBuf = 64 << 10

func newBufPool() *bufcopy.Pool { return bufcopy.NewPool(pooledBuf) }
