package hbone

import (
	"errors"
	"io"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ambient-agent/ambient-agent/agent/internal/bufcopy"
)

// Direct writes. A stream copied to a socket (WriteTo, what the proxy's relay does for tunnel -> upstream and
// tunnel -> client) would have the read loop hand every message to the copying goroutine: a wake-up, often a
// context switch, per message. Instead, when that goroutine is parked waiting for data, the read loop writes what
// it just received to the socket itself, once, without blocking (a non-blocking write(2) through the socket's
// RawConn). What the socket takes is consumed at once; only what it does not (a full send buffer, an error) is
// left in the queue, and the copying goroutine is woken to write it and to see the error. Order holds: the read
// loop writes only when the queue held nothing else and the copier is parked, and the copier does not peek while
// the read loop writes (Stream.direct).

// attachSink lets the read loop write to w directly when w is a socket.
func (s *Stream) attachSink(w io.Writer) {
	sc, ok := w.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	d := &directWriter{rc: rc}
	d.fn = d.write // bound once per tunnel: a write allocates nothing
	s.c.mu.Lock()
	s.sink = d
	s.c.mu.Unlock()
}

// detachSink ends direct writes; one under way finishes first.
func (s *Stream) detachSink() {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for s.direct {
		s.awaitDirect = true
		s.readCond.Wait()
	}
	s.sink = nil
}

// directable says whether the read loop may write the queue to the sink itself: the copier is parked, and the
// queue holds only what was just received (nobody is copying from it). c.mu is held.
func (s *Stream) directable() bool {
	return s.sink != nil && s.sinkWaiting && !s.direct && !s.rq.busy && !s.rq.filling && len(s.rq.chunks) == 1
}

// writeDirectLocked writes the queued bytes to the sink, one non-blocking attempt, and consumes what it took. c.mu
// is held on entry and exit; it is released around the write.
func (c *conn) writeDirectLocked(s *Stream) {
	s.direct = true
	b := s.rq.peek()
	sink := s.sink
	c.mu.Unlock()
	n, err := sink.try(b)
	c.mu.Lock()
	s.direct = false
	released := s.released
	s.rq.consume(n, c.bufs)
	if !released && n > 0 {
		c.creditLocked(s, n)
	}
	if n > 0 {
		s.received.Add(int64(n))
	}
	// Wake the copier only when it has something to do (the rest, the error) or waits for this write to end.
	if s.rq.size > 0 || err != nil || released || s.awaitDirect {
		s.awaitDirect = false
		s.readCond.Broadcast()
	}
}

// directWriter makes one write(2) to a socket without waiting. Only the read loop uses it, one write at a time.
type directWriter struct {
	rc  syscall.RawConn
	fn  func(fd uintptr) bool
	b   []byte
	n   int
	err error
}

func (d *directWriter) write(fd uintptr) bool {
	d.n, d.err = bufcopy.WriteRaw(fd, d.b) // no scheduler bookkeeping: see bufcopy.ReadRaw
	return true                            // one attempt: never wait for room
}

// try writes what it can of b: EAGAIN is 0 bytes, not an error.
func (d *directWriter) try(b []byte) (int, error) {
	d.b = b
	err := d.rc.Write(d.fn)
	d.b = nil
	switch {
	case err != nil:
		return 0, err
	case errors.Is(d.err, unix.EAGAIN) || d.n < 0:
		return 0, nil
	}
	return d.n, d.err
}
