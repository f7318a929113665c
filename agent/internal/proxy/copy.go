package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
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
// Copies into a connection that is not TCP (an HBONE stream) borrow their bulk
// buffers from bufs (see copyAdaptive); with bufs nil every copy is io.Copy.
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
	if _, tcp := dst.(*net.TCPConn); bufs != nil && !tcp {
		n, err = copyAdaptive(dst, src, bufs)
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

// Buffer sizes of copyAdaptive.
const (
	smallBuf = 4 << 10  // held by a copy waiting on an idle connection
	largeBuf = 64 << 10 // borrowed while data keeps coming: one DATA frame of four full TLS records per read
)

// bufPool lends the large buffers of copyAdaptive. It belongs to a proxy, not
// to the package.
type bufPool struct{ p sync.Pool }

func newBufPool() *bufPool {
	return &bufPool{p: sync.Pool{New: func() any {
		b := make([]byte, largeBuf)
		return &b
	}}}
}

func (bp *bufPool) get() *[]byte  { return bp.p.Get().(*[]byte) }
func (bp *bufPool) put(b *[]byte) { bp.p.Put(b) }

// copyAdaptive copies src to dst as io.Copy does, but holds only a small
// buffer while src is idle. Most tunnels are idle most of the time, and a
// large buffer held by every blocked read costs its full size per open
// connection (64 KiB through the stream's own ReadFrom). A read that fills the
// small buffer means more is waiting: the copy borrows a large buffer and keeps
// it while reads fill it, and gives it back after the first read that does not
// (src is drained, so the next read is likely to block).
func copyAdaptive(dst io.Writer, src io.Reader, bufs *bufPool) (int64, error) {
	small := make([]byte, smallBuf)
	var large *[]byte
	defer func() {
		if large != nil {
			bufs.put(large)
		}
	}()
	var total int64
	for {
		buf := small
		if large != nil {
			buf = *large
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr == nil && w < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return total, werr
			}
		}
		switch {
		case large == nil && n == len(buf):
			large = bufs.get()
		case large != nil && n < len(buf):
			bufs.put(large)
			large = nil
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}
