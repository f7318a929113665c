package bufcopy

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Raw socket I/O. Go's syscall.Read and syscall.Write tell the scheduler that the goroutine may block in the
// kernel (entersyscall/exitsyscall). When every P was idle, that also wakes the runtime's monitor thread (sysmon),
// which then polls every 20 us until the process is idle again: measured on a relay at 1,000 requests/s, those
// wake-ups and sleeps were three of the five context switches per request of each agent. A read or write on a
// non-blocking socket never blocks, so it needs none of that: ReadRaw and WriteRaw make the system call directly
// (RawSyscall). They are only for non-blocking descriptors (every socket the net package opens is one).

// ReadRaw reads from the non-blocking descriptor fd into b, retrying on EINTR. EAGAIN is returned as it is.
func ReadRaw(fd uintptr, b []byte) (int, error) { return rawIO(syscall.SYS_READ, fd, b) }

// rawIO makes the read or write system call trap on fd with b, retrying on EINTR.
func rawIO(trap, fd uintptr, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	for {
		n, _, e := syscall.RawSyscall(trap, fd, uintptr(p), uintptr(len(b)))
		switch e {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		}
		return 0, e
	}
}

// rawWriteMax is the largest write made raw. A raw system call keeps its P (the scheduler's slot) while it runs, and
// delivering a write over veth runs the receiver's network stack inside the call; a write larger than a TLS record
// (the 64 KiB plaintext writes of bulk data to an application) goes through syscall.Write, which lets the scheduler
// hand the P on meanwhile. TLS records (at most 16 KiB and their overhead) stay raw: in full benchmark runs, one
// stream's throughput was 1.15-1.22x the agent before raw calls with them raw, and 0.96x with writes over 8 KiB made
// ordinary calls (docs/benchmarks.md).
const rawWriteMax = 32 << 10

// WriteRaw writes b to the non-blocking descriptor fd once, retrying on EINTR. It may write less than len(b);
// EAGAIN (nothing written) is returned as it is. Writes over rawWriteMax bytes are ordinary system calls.
func WriteRaw(fd uintptr, b []byte) (int, error) {
	if len(b) > rawWriteMax {
		for {
			n, err := syscall.Write(int(fd), b)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				return 0, err
			}
			return n, nil
		}
	}
	return rawIO(syscall.SYS_WRITE, fd, b)
}

// Conn is a TCP connection whose Read and Write make raw system calls (ReadRaw, WriteRaw) and wait for the socket
// through the runtime's poller as net.TCPConn does, deadlines included. Everything else is the TCPConn's. It is
// meant to sit under crypto/tls, which serializes Reads and serializes Writes; like a net.Conn it allows one Read
// and one Write at a time each (concurrent Reads, or concurrent Writes, are not allowed).
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The read and write in progress, and their functions bound once: a Read or Write allocates nothing.
	rb     []byte
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	wb      []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

// NewConn wraps tc. If its raw connection is unavailable it returns an error and tc is left as it was.
func NewConn(tc *net.TCPConn) (*Conn, error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &Conn{TCPConn: tc, rc: rc}
	c.readFn = c.read
	c.writeFn = c.write
	return c, nil
}

// Wrap returns nc as a *Conn when it is a TCP connection, else nc itself.
func Wrap(nc net.Conn) net.Conn {
	if tc, ok := nc.(*net.TCPConn); ok {
		if c, err := NewConn(tc); err == nil {
			return c
		}
	}
	return nc
}

func (c *Conn) read(fd uintptr) bool {
	c.rn, c.rerr = ReadRaw(fd, c.rb)
	return c.rerr != syscall.EAGAIN
}

func (c *Conn) write(fd uintptr) bool {
	for c.wn < len(c.wb) {
		n, err := WriteRaw(fd, c.wb[c.wn:])
		if err == syscall.EAGAIN {
			return false // wait for room, keeping what was written
		}
		if err != nil {
			c.werr = err
			return true
		}
		c.wn += n
	}
	return true
}

// Read reads as net.TCPConn.Read does: at end of stream it returns io.EOF.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rb, c.rn, c.rerr = b, 0, nil
	err := c.rc.Read(c.readFn)
	n, rerr := c.rn, c.rerr
	c.rb, c.rerr = nil, nil
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, c.opError("read", rerr)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of b, waiting for room as net.TCPConn.Write does.
func (c *Conn) Write(b []byte) (int, error) {
	c.wb, c.wn, c.werr = b, 0, nil
	err := c.rc.Write(c.writeFn)
	n, werr := c.wn, c.werr
	c.wb, c.werr = nil, nil
	switch {
	case err != nil:
		return n, err
	case werr != nil:
		return n, c.opError("write", werr)
	}
	return n, nil
}

// opError is the error net.TCPConn returns for a failed system call.
func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, err)}
}
