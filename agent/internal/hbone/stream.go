package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
)

// Stream is one tunnel: an HTTP/2 CONNECT stream used as a byte pipe. It is a net.Conn with CloseWrite
// (END_STREAM), and implements io.ReaderFrom and io.WriterTo so that io.Copy moves bytes without extra copies.
// WriteToAsync is WriteTo without a goroutine waiting for the tunnel's bytes (direct.go).
//
// Read returns io.EOF once the peer ended its side (END_STREAM), or reset the stream with NO_ERROR or CANCEL.
// Close ends both directions: gracefully if the peer already ended its side, else with RST_STREAM(CANCEL).
// Deadlines bound waiting for data and for flow-control window; a write blocked in the network is bounded by the
// connection's keepalive instead.
type Stream struct {
	c  *conn
	id uint32

	readMu  sync.Mutex // one reader at a time
	writeMu sync.Mutex // one writer at a time

	// Under c.mu.
	readCond sync.Cond
	// sink is where WriteTo copies, when it is a socket the read loop may write to itself (direct.go);
	// sinkWaiting: WriteTo waits for data with an empty queue; direct: the read loop is writing to sink.
	sink        *directWriter
	sinkWaiting bool
	direct      bool
	awaitDirect bool // someone waits for the direct write to end
	// WriteToAsync: where to copy, what to call at the end, and whether its copier goroutine runs now.
	asyncW      io.Writer
	asyncDone   func(int64, error)
	asyncStart  int64
	copying     bool
	sendWindow  int64
	recvWindow  int64
	recvUnacked int64
	rq          recvQueue
	sendEnded   bool
	recvEnded   bool
	reset       bool
	resetCode   http2.ErrCode
	resetRemote bool
	cause       error // why the stream was reset locally or failed with its connection
	released    bool
	readDL      time.Time
	writeDL     time.Time
	readTimer   *time.Timer
	writeTimer  *time.Timer
	status      int           // client: the response status once answered
	answered    chan struct{} // client: closed when the response arrived or the stream failed first

	ctx    context.Context // server: cancelled when the stream or its connection fails
	cancel context.CancelCauseFunc

	sent     atomic.Int64
	received atomic.Int64
	onClose  func(*Stream) // runs once, after Close released the stream
}

var (
	_ net.Conn      = (*Stream)(nil)
	_ io.ReaderFrom = (*Stream)(nil)
	_ io.WriterTo   = (*Stream)(nil)
)

func newStream(c *conn, id uint32) *Stream {
	s := &Stream{
		c:          c,
		id:         id,
		sendWindow: c.peerWindow,
		recvWindow: streamWindow,
		answered:   make(chan struct{}),
	}
	s.readCond.L = &c.mu
	return s
}

// PeerIdentity is the SPIFFE ID of the other end of the HTTP/2 connection.
func (s *Stream) PeerIdentity() spiffeid.ID { return s.c.peer }

// LocalAddr and RemoteAddr are those of the underlying HBONE (TLS) connection.
func (s *Stream) LocalAddr() net.Addr  { return s.c.nc.LocalAddr() }
func (s *Stream) RemoteAddr() net.Addr { return s.c.nc.RemoteAddr() }

// BytesSent and BytesReceived count payload bytes carried so far.
func (s *Stream) BytesSent() int64     { return s.sent.Load() }
func (s *Stream) BytesReceived() int64 { return s.received.Load() }

// bytes is BytesSent and BytesReceived, for TunnelInfo.Bytes.
func (s *Stream) bytes() (sent, received int64) { return s.sent.Load(), s.received.Load() }

// Read reads tunnel bytes.
func (s *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.readMu.Lock()
	defer s.readMu.Unlock()
	b, err := s.waitReadable()
	if err != nil {
		return 0, err
	}
	n := copy(p, b)
	s.consumed(n)
	return n, nil
}

// WriteTo copies the tunnel's bytes to w until EOF, straight from the receive buffers. When w is a socket, the
// read loop writes what arrives to it itself while it can without blocking (direct.go): no hand-off to this
// goroutine per message. The count returned includes those bytes.
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	start := s.received.Load()
	s.attachSink(w)
	defer s.detachSink()
	for {
		b, err := s.waitReadable()
		if err == io.EOF {
			return s.received.Load() - start, nil
		}
		if err != nil {
			return s.received.Load() - start, err
		}
		n, werr := w.Write(b)
		s.consumed(n)
		if werr != nil {
			return s.received.Load() - start, werr
		}
	}
}

// waitReadable waits for buffered bytes and returns the head of the receive queue, marked busy: the caller
// copies from it and then calls consumed.
func (s *Stream) waitReadable() ([]byte, error) { return s.waitReadableOr(false) }

// waitReadableOr is waitReadable; with idleExit, instead of waiting for data while the read loop can write it
// directly, the caller leaves the copying to the read loop: it returns nil and no error.
func (s *Stream) waitReadableOr(idleExit bool) ([]byte, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case s.direct: // the read loop is writing to the sink: it signals when done
		case s.released:
			return nil, net.ErrClosed
		case s.rq.size > 0:
			return s.rq.peek(), nil
		case s.recvEnded:
			return nil, io.EOF
		case s.reset:
			return nil, s.readErrLocked()
		case deadlinePassed(s.readDL):
			return nil, os.ErrDeadlineExceeded
		case idleExit && s.sink != nil:
			s.copying = false
			s.sinkWaiting = true
			return nil, nil
		}
		s.sinkWaiting = s.sink != nil && !s.direct
		s.awaitDirect = s.awaitDirect || s.direct
		s.readCond.Wait()
		s.sinkWaiting = false
	}
}

func (s *Stream) consumed(n int) {
	c := s.c
	c.mu.Lock()
	released := s.released
	s.rq.consume(n, c.bufs)
	if !released {
		c.creditLocked(s, n)
	}
	c.mu.Unlock()
	s.received.Add(int64(n))
}

// readErrLocked is what Read returns on a reset stream: EOF for a peer's NO_ERROR or CANCEL, else the failure.
func (s *Stream) readErrLocked() error {
	if s.resetRemote && (s.resetCode == http2.ErrCodeNo || s.resetCode == http2.ErrCodeCancel) {
		return io.EOF
	}
	return s.failureLocked()
}

func (s *Stream) failureLocked() error {
	if s.resetRemote {
		return newError(FlagReset, "stream", s.c.remote.String(), errors.New("reset by peer: "+s.resetCode.String()))
	}
	if s.cause != nil {
		var e *Error
		if errors.As(s.cause, &e) {
			return s.cause
		}
		return newError(FlagReset, "stream", s.c.remote.String(), s.cause)
	}
	return newError(FlagReset, "stream", s.c.remote.String(), errors.New("reset: "+s.resetCode.String()))
}

// Write sends p as DATA frames, waiting for flow-control window as needed.
func (s *Stream) Write(p []byte) (int, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	written := 0
	for len(p) > 0 {
		n, err := s.c.reserveSend(s, len(p))
		if err != nil {
			return written, err
		}
		if err := s.c.writeData(s, p[:n]); err != nil {
			return written, s.writeErr(err)
		}
		s.sent.Add(int64(n))
		written += n
		p = p[n:]
	}
	return written, nil
}

// ReadFrom copies r into the tunnel until r's EOF (which is not forwarded: call CloseWrite for that).
func (s *Stream) ReadFrom(r io.Reader) (int64, error) {
	bp := s.c.bufs.Get()
	defer s.c.bufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			w, werr := s.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

func (s *Stream) writeErr(err error) error {
	var e *Error
	if errors.As(err, &e) || errors.Is(err, net.ErrClosed) {
		return err
	}
	return newError(FlagReset, "write", s.c.remote.String(), err)
}

// sendErrLocked reports why s cannot send now, or nil.
func (s *Stream) sendErrLocked() error {
	switch {
	case s.released:
		return net.ErrClosed
	case s.reset:
		return s.failureLocked()
	case s.sendEnded:
		return errWriteAfterEnd
	}
	return nil
}

// CloseWrite ends our direction of the tunnel (END_STREAM); the other direction keeps flowing.
func (s *Stream) CloseWrite() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.released {
		return net.ErrClosed
	}
	if s.reset {
		return s.failureLocked()
	}
	if !s.sendEnded {
		s.sendEnded = true
		c.queueCtrl(ctrlFrame{kind: ctrlEndStream, stream: s.id})
		c.forgetLocked(s)
	}
	return nil
}

// Close ends the tunnel and releases its buffers. It never blocks on the network.
func (s *Stream) Close() error {
	c := s.c
	c.mu.Lock()
	if s.released {
		c.mu.Unlock()
		return nil
	}
	switch {
	case s.reset || (s.sendEnded && s.recvEnded):
	case !s.recvEnded:
		s.resetLocked(http2.ErrCodeCancel, false, net.ErrClosed)
		c.queueCtrl(ctrlFrame{kind: ctrlReset, stream: s.id, val: uint32(http2.ErrCodeCancel)})
	default:
		s.sendEnded = true
		c.queueCtrl(ctrlFrame{kind: ctrlEndStream, stream: s.id})
	}
	s.released = true
	if c.streams[s.id] == s {
		delete(c.streams, s.id)
	}
	if dropped := s.rq.release(c.bufs); dropped > 0 {
		c.creditLocked(nil, dropped)
	}
	s.stopTimersLocked()
	s.wakeReaderLocked()
	c.sendCond.Broadcast()
	c.mu.Unlock()
	if s.cancel != nil {
		s.cancel(net.ErrClosed)
	}
	if s.onClose != nil {
		s.onClose(s)
	}
	return nil
}

// resetLocked marks the stream reset (by the peer if remote) and wakes everyone waiting on it.
func (s *Stream) resetLocked(code http2.ErrCode, remote bool, cause error) {
	if s.reset {
		return
	}
	s.reset = true
	s.resetCode = code
	s.resetRemote = remote
	s.cause = cause
	s.answeredLocked()
	s.wakeReaderLocked()
	s.c.sendCond.Broadcast()
	if s.cancel != nil {
		s.cancel(errors.New("stream reset: " + code.String()))
	}
}

// abortLocked fails the stream because its connection failed (or will not process it: errStreamRefused).
func (s *Stream) abortLocked(err error) {
	s.resetLocked(http2.ErrCodeCancel, false, err)
}

// answeredLocked wakes a client waiting for the response (closes answered once).
func (s *Stream) answeredLocked() {
	select {
	case <-s.answered:
	default:
		close(s.answered)
	}
}

func (s *Stream) SetDeadline(t time.Time) error {
	_ = s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

func (s *Stream) SetReadDeadline(t time.Time) error {
	s.setDeadline(&s.readDL, &s.readTimer, s.wakeReaderLocked, t)
	return nil
}

func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.setDeadline(&s.writeDL, &s.writeTimer, s.c.sendCond.Broadcast, t)
	return nil
}

// setDeadline sets a deadline of the stream and wakes who waits for it (wakeLocked, under c.mu), now and when
// the deadline passes.
func (s *Stream) setDeadline(dl *time.Time, timer **time.Timer, wakeLocked func(), t time.Time) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	*dl = t
	*timer = armDeadline(*timer, t, func() {
		c.mu.Lock()
		wakeLocked()
		c.mu.Unlock()
	})
	wakeLocked()
}

func (s *Stream) stopTimersLocked() {
	if s.readTimer != nil {
		s.readTimer.Stop()
	}
	if s.writeTimer != nil {
		s.writeTimer.Stop()
	}
}

// armDeadline (re)arms t to call wake at deadline, or stops it for a zero deadline.
func armDeadline(t *time.Timer, deadline time.Time, wake func()) *time.Timer {
	if deadline.IsZero() {
		if t != nil {
			t.Stop()
		}
		return t
	}
	d := time.Until(deadline)
	if t == nil {
		return time.AfterFunc(d, wake)
	}
	t.Reset(d)
	return t
}

func deadlinePassed(t time.Time) bool { return !t.IsZero() && !time.Now().Before(t) }
