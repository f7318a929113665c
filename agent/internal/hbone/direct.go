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

//
// WriteToAsync goes one step further: no goroutine waits for the tunnel's data at all. The read loop writes what
// the socket takes; a copier goroutine is started only for the rest (a full send buffer), for the end of the
// stream and for failures, and it ends as soon as the queue is empty again. An idle tunnel then costs one goroutine
// (the one copying the other way) instead of two.

// attachSink lets the read loop write to w directly when w is a socket.
func (s *Stream) attachSink(w io.Writer) {
	d := sinkFor(w)
	if d == nil {
		return
	}
	s.c.mu.Lock()
	s.sink = d
	s.c.mu.Unlock()
}

// sinkFor is a direct writer to w, or nil when w is not a socket.
func sinkFor(w io.Writer) *directWriter {
	sc, ok := w.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	d := &directWriter{rc: rc}
	d.fn = d.write // bound once per tunnel: a write allocates nothing
	return d
}

// WriteToAsync copies the tunnel's bytes to w as WriteTo does, and returns at once; done runs once at the end,
// with what WriteTo would have returned, on a goroutine of its own (it may block). When w is a socket, no
// goroutine waits for the tunnel's data meanwhile (see above); otherwise one copies as WriteTo does. Nothing
// else may read s until done runs.
func (s *Stream) WriteToAsync(w io.Writer, done func(int64, error)) {
	s.readMu.Lock() // unlocked by the copier, before done
	d := sinkFor(w)
	c := s.c
	c.mu.Lock()
	s.sink = d
	s.asyncW, s.asyncDone, s.asyncStart = w, done, s.received.Load()
	// A first copier looks at what is queued already (or at the end of the stream, or a failure) and hands over.
	s.wakeReaderLocked()
	c.mu.Unlock()
}

// wakeReaderLocked wakes the stream's reader: a waiting Read or WriteTo, or under WriteToAsync the copier, which
// is started if it is not running. c.mu is held.
func (s *Stream) wakeReaderLocked() {
	if s.asyncDone != nil && !s.copying {
		s.copying = true
		s.sinkWaiting = false
		go s.copyAsync()
		return
	}
	s.readCond.Broadcast()
}

// copyAsync is WriteToAsync's copier: it writes what the read loop could not, and returns when the queue is
// empty and the read loop can write again, or calls done at the end of the stream or on a failure.
func (s *Stream) copyAsync() {
	w := s.asyncW
	for {
		b, err := s.waitReadableOr(true)
		if b == nil && err == nil {
			return // idle: the read loop writes again
		}
		if err == nil {
			var n int
			n, err = w.Write(b)
			s.consumed(n)
		}
		if err != nil {
			s.finishAsync(err)
			return
		}
	}
}

// finishAsync ends WriteToAsync and calls its done.
func (s *Stream) finishAsync(err error) {
	c := s.c
	c.mu.Lock()
	done := s.asyncDone
	n := s.received.Load() - s.asyncStart
	s.asyncDone, s.asyncW, s.sink, s.sinkWaiting, s.copying = nil, nil, nil, false, false
	c.mu.Unlock()
	s.readMu.Unlock()
	if err == io.EOF {
		err = nil
	}
	done(n, err)
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
		s.wakeReaderLocked()
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
