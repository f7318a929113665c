// Package bufcopy copies from TCP sockets into writers without holding a buffer while the socket is idle.
//
// Most tunnels are idle most of the time. A copy that blocks in Read with a buffer in hand costs that buffer for
// every open connection (64 KiB each for HBONE's DATA-sized reads). FromTCP reads on the raw socket instead: it
// borrows a buffer for one read attempt, gives it back at once when the socket has nothing (EAGAIN), and waits for
// readability with empty hands; a buffer is only out between a read that returned data and the write of that data.
//
// Its reads, and Conn (what crypto/tls reads and writes HBONE connections through), make raw system calls: a read
// or write on a non-blocking socket never blocks, so it skips the scheduler's system-call bookkeeping and the
// wake-ups of the runtime's monitor thread that come with it (raw.go).
//
// bufcopy is a leaf: it imports only the standard library, never an agent package.
package bufcopy

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// Pool lends buffers of one size. It belongs to its user (a proxy, an HBONE server or pool), not to the package.
type Pool struct {
	p    sync.Pool
	lent atomic.Int64
}

// NewPool returns a pool of size-byte buffers.
func NewPool(size int) *Pool {
	return &Pool{p: sync.Pool{New: func() any {
		b := make([]byte, size)
		return &b
	}}}
}

// Get borrows a buffer; Put gives it back.
func (p *Pool) Get() *[]byte {
	p.lent.Add(1)
	return p.p.Get().(*[]byte)
}

// Put gives back a buffer from Get. Its contents may be reused at once.
func (p *Pool) Put(b *[]byte) {
	p.lent.Add(-1)
	p.p.Put(b)
}

// Lent is the number of buffers out now.
func (p *Pool) Lent() int64 { return p.lent.Load() }

// FromTCP copies src to dst until EOF (a nil error) or an error, as io.Copy does, holding a buffer of p only while
// a read's data is being written. dst.Write must not keep the slice it is given.
func FromTCP(dst io.Writer, src *net.TCPConn, p *Pool) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	r := &tcpReader{p: p}
	r.fn = r.read // bound once per copy: a read allocates nothing
	var total int64
	for {
		err := rc.Read(r.fn)
		buf, n := r.buf, r.n
		r.buf = nil
		if err == nil && r.err != nil {
			err = readError(src, r.err)
		}
		if err != nil {
			if buf != nil {
				p.Put(buf)
			}
			return total, err
		}
		if n == 0 { // EOF
			p.Put(buf)
			return total, nil
		}
		w, werr := dst.Write((*buf)[:n])
		p.Put(buf)
		total += int64(w)
		if werr == nil && w < n {
			werr = io.ErrShortWrite
		}
		if werr != nil {
			return total, werr
		}
	}
}

// tcpReader is FromTCP's read: a buffer is borrowed only for a read that returns data (or EOF, or an error).
type tcpReader struct {
	p   *Pool
	fn  func(fd uintptr) bool
	buf *[]byte
	n   int
	err error
}

func (r *tcpReader) read(fd uintptr) bool {
	r.buf = r.p.Get()
	r.n, r.err = ReadRaw(fd, *r.buf)
	if r.err == syscall.EAGAIN {
		r.p.Put(r.buf)
		r.buf = nil
		return false // wait for data, holding nothing
	}
	return true
}

// readError is the error a failed read of src returns, as net's own reads word it. Not inlined: it keeps FromTCP's
// frame small (the goroutine parked in it lives as long as the connection).
//
//go:noinline
func readError(src *net.TCPConn, err error) error {
	return &net.OpError{Op: "read", Net: "tcp", Source: src.LocalAddr(), Addr: src.RemoteAddr(), Err: os.NewSyscallError("read", err)}
}
