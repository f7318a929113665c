package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
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
// their buffers from bufs (see copyPooled); with bufs nil every copy is io.Copy.
func relay(down, up net.Conn, bufs *bufPool) (Bytes, error) {
	var (
		b    Bytes
		wg   sync.WaitGroup
		errs [2]error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.Received, errs[1] = pipe(down, up, bufs)
	}()
	b.Sent, errs[0] = pipe(up, down, bufs)
	wg.Wait()
	down.Close()
	up.Close()
	return b, errors.Join(errs[0], errs[1])
}

// pipe copies src to dst, then half-closes dst. On an error it aborts both so
// that the other direction stops too and a TCP end learns of the failure by a
// reset rather than a clean close. io.Copy lets TCP-to-TCP use splice, and a
// stream-to-TCP copy writes straight from the stream's receive buffers.
func pipe(dst, src net.Conn, bufs *bufPool) (int64, error) {
	var (
		n   int64
		err error
	)
	srcTCP, fromTCP := src.(*net.TCPConn)
	if _, toTCP := dst.(*net.TCPConn); bufs != nil && fromTCP && !toTCP {
		n, err = copyPooled(dst, srcTCP, bufs)
	} else {
		n, err = io.Copy(dst, src)
	}
	if err != nil {
		abort(dst)
		abort(src)
		return n, err
	}
	if cw, ok := dst.(closeWriter); ok {
		if err := cw.CloseWrite(); err != nil {
			abort(dst)
			abort(src)
			return n, err
		}
		return n, nil
	}
	dst.Close()
	return n, nil
}

// abort closes c; a TCP connection is reset (SO_LINGER 0).
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// bufPool lends the buffers of copyPooled. It belongs to a proxy, not to the
// package.
type bufPool struct {
	p    sync.Pool
	lent atomic.Int64 // buffers out now (tests)
}

// pooledBuf is the size of copyPooled's buffers: one DATA frame of four full
// TLS records per read, as the stream's own ReadFrom used.
const pooledBuf = 64 << 10

func newBufPool() *bufPool {
	return &bufPool{p: sync.Pool{New: func() any {
		b := make([]byte, pooledBuf)
		return &b
	}}}
}

func (bp *bufPool) get() *[]byte {
	bp.lent.Add(1)
	return bp.p.Get().(*[]byte)
}

func (bp *bufPool) put(b *[]byte) {
	bp.lent.Add(-1)
	bp.p.Put(b)
}

// copyPooled copies src to dst as io.Copy does, but holds no buffer while src
// is idle. Most tunnels are idle most of the time, and a buffer held by every
// blocked read costs its full size per open connection (64 KiB through the
// stream's own ReadFrom). The read itself runs on the raw socket: a buffer is
// borrowed for a read attempt, given back at once if the socket has nothing
// (EAGAIN), and the copy then waits for readability with empty hands.
func copyPooled(dst io.Writer, src *net.TCPConn, bufs *bufPool) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	var total int64
	for {
		var (
			buf  *[]byte
			n    int
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
			buf = bufs.get()
			for {
				n, rerr = syscall.Read(int(fd), *buf)
				if rerr != syscall.EINTR {
					break
				}
			}
			if rerr == syscall.EAGAIN {
				bufs.put(buf)
				buf = nil
				return false // wait for data, holding nothing
			}
			return true
		})
		if err == nil && rerr != nil {
			err = &net.OpError{Op: "read", Net: "tcp", Source: src.LocalAddr(), Addr: src.RemoteAddr(),
				Err: os.NewSyscallError("read", rerr)}
		}
		if err != nil {
			if buf != nil {
				bufs.put(buf)
			}
			return total, err
		}
		if n == 0 { // EOF
			bufs.put(buf)
			return total, nil
		}
		w, werr := dst.Write((*buf)[:n])
		bufs.put(buf)
		total += int64(w)
		if werr == nil && w < n {
			werr = io.ErrShortWrite
		}
		if werr != nil {
			return total, werr
		}
	}
}
