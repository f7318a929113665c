package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"golang.org/x/net/http2"
)

// protoError is a connection error we detect ourselves: the connection ends with GOAWAY(code).
type protoError struct {
	code http2.ErrCode
	msg  string
}

func (e *protoError) Error() string { return "http2 " + e.code.String() + ": " + e.msg }

func connErr(code http2.ErrCode, format string, args ...any) error {
	return &protoError{code: code, msg: fmt.Sprintf(format, args...)}
}

// maxRefusedStreams is how many streams a peer may have refused for exceeding the concurrency limit before the
// connection is cut with ENHANCE_YOUR_CALM (rapid-reset and stream floods).
const maxRefusedStreams = 1000

// readLoop reads and dispatches frames until the connection fails. It returns the cause.
func (c *conn) readLoop() error {
	for {
		fh, err := c.fr.ReadFrameHeader()
		if err != nil {
			return c.readFailed(err)
		}
		if !c.sawSettings && (fh.Type != http2.FrameSettings || fh.Flags.Has(http2.FlagSettingsAck)) {
			return c.readFailed(connErr(http2.ErrCodeProtocol, "first frame is %v, not SETTINGS", fh.Type))
		}
		if fh.Type == http2.FrameData {
			err = c.onData(fh)
		} else {
			var f http2.Frame
			f, err = c.fr.ReadFrameForHeader(fh)
			if se, ok := err.(http2.StreamError); ok {
				c.onStreamError(se)
				continue
			}
			if err == nil {
				err = c.onFrame(f)
			}
		}
		if err != nil {
			return c.readFailed(err)
		}
	}
}

// readFailed turns a read error into the connection's cause, sending GOAWAY first for protocol errors.
func (c *conn) readFailed(err error) error {
	var (
		ce http2.ConnectionError
		pe *protoError
	)
	switch {
	case errors.As(err, &pe):
		err = newError(FlagProtocol, "read", c.remote.String(), err)
		c.abort(pe.code, err)
	case errors.As(err, &ce):
		detail := c.fr.ErrorDetail()
		if detail == nil {
			detail = ce
		}
		err = newError(FlagProtocol, "read", c.remote.String(), fmt.Errorf("%w: %w", ce, detail))
		c.abort(http2.ErrCode(ce), err)
	case errors.Is(err, http2.ErrFrameTooLarge):
		err = newError(FlagProtocol, "read", c.remote.String(), err)
		c.abort(http2.ErrCodeFrameSize, err)
	default:
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = errConnClosed
		}
		err = newError(FlagReset, "read", c.remote.String(), err)
	}
	return err
}

func (c *conn) onFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		if c.server {
			return c.onRequestHeaders(f)
		}
		return c.onResponseHeaders(f)
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.PingFrame:
		c.onPing(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		return c.onReset(f)
	case *http2.GoAwayFrame:
		c.onGoAway(f)
	case *http2.PushPromiseFrame:
		return connErr(http2.ErrCodeProtocol, "PUSH_PROMISE with push disabled")
	}
	return nil // PRIORITY, PRIORITY_UPDATE, unknown types: ignored
}

// onStreamError resets a stream whose frame was malformed (bad header block, zero window increment, ...).
func (c *conn) onStreamError(se http2.StreamError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.server && se.StreamID%2 == 1 && se.StreamID > c.lastPeerID {
		c.lastPeerID = se.StreamID // a malformed request still uses up its ID
	}
	if s := c.streams[se.StreamID]; s != nil {
		c.resetStreamLocked(s, se.Code, fmt.Errorf("malformed frame: %w", se))
		return
	}
	c.queueCtrl(ctrlFrame{kind: ctrlReset, stream: se.StreamID, val: uint32(se.Code)})
}

// resetStreamLocked resets s from our side with code and tells the peer.
func (c *conn) resetStreamLocked(s *Stream, code http2.ErrCode, cause error) {
	if s.reset {
		return
	}
	s.resetLocked(code, false, cause)
	c.queueCtrl(ctrlFrame{kind: ctrlReset, stream: s.id, val: uint32(code)})
	c.forgetLocked(s)
}

func (c *conn) onData(fh http2.FrameHeader) error {
	if fh.StreamID == 0 {
		return connErr(http2.ErrCodeProtocol, "DATA on stream 0")
	}
	n := int(fh.Length)
	padded := fh.Flags.Has(http2.FlagDataPadded)
	data, err := c.dataLength(n, padded)
	if err != nil {
		return err
	}
	end := fh.Flags.Has(http2.FlagDataEndStream)

	c.mu.Lock()
	if int64(n) > c.recvWindow {
		c.mu.Unlock()
		return connErr(http2.ErrCodeFlowControl, "DATA beyond the connection window")
	}
	c.recvWindow -= int64(n)
	s := c.streams[fh.StreamID]
	if s == nil && c.idleStreamLocked(fh.StreamID) {
		c.mu.Unlock()
		return connErr(http2.ErrCodeProtocol, "DATA on idle stream %d", fh.StreamID)
	}
	refuse, code := true, http2.ErrCodeStreamClosed
	switch {
	case s == nil || s.recvEnded:
	case !c.server && s.status == 0:
		code = http2.ErrCodeProtocol // DATA before the response headers
	case int64(n) > s.recvWindow:
		code = http2.ErrCodeFlowControl
	default:
		refuse = false
	}
	if refuse || s.reset {
		c.creditLocked(nil, n) // nobody will consume it
		switch {
		case s == nil:
			c.queueCtrl(ctrlFrame{kind: ctrlReset, stream: fh.StreamID, val: uint32(code)})
		case refuse:
			c.resetStreamLocked(s, code, fmt.Errorf("peer sent DATA: %v", code))
		}
		c.mu.Unlock()
		return c.discard(n - boolInt(padded))
	}
	s.recvWindow -= int64(n)
	if pad := n - data; pad > 0 {
		c.creditLocked(s, pad) // the pad length byte and padding count as consumed at once
	}
	c.mu.Unlock()

	if err := c.fill(s, data); err != nil {
		return err
	}
	if err := c.discard(n - data - boolInt(padded)); err != nil {
		return err
	}
	if end {
		c.endRecv(s)
	}
	return nil
}

// dataLength is how many bytes of a DATA frame of length n are data: all of
// them, or with padding, what the pad length (read here) leaves.
func (c *conn) dataLength(n int, padded bool) (int, error) {
	if !padded {
		return n, nil
	}
	if n == 0 {
		return 0, connErr(http2.ErrCodeProtocol, "padded DATA without pad length")
	}
	var pl [1]byte
	if _, err := io.ReadFull(c.nc, pl[:]); err != nil {
		return 0, err
	}
	data := n - 1 - int(pl[0])
	if data < 0 {
		return 0, connErr(http2.ErrCodeProtocol, "DATA padding longer than the frame")
	}
	return data, nil
}

// endRecv marks the peer's side of s ended (END_STREAM) and wakes its reader.
func (c *conn) endRecv(s *Stream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !s.reset {
		c.endRecvLocked(s)
	}
}

func (c *conn) endRecvLocked(s *Stream) {
	if !s.recvEnded {
		s.recvEnded = true
		s.wakeReaderLocked()
		c.forgetLocked(s)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fill reads n payload bytes from the network straight into s's receive queue.
func (c *conn) fill(s *Stream, n int) error {
	for n > 0 {
		c.mu.Lock()
		room := s.rq.spare(c.bufs)
		c.mu.Unlock()
		k := min(len(room), n)
		_, err := io.ReadFull(c.nc, room[:k])
		c.mu.Lock()
		switch {
		case !s.rq.commit(k, c.bufs):
			c.creditLocked(nil, k) // released meanwhile: dropped
		case err == nil && s.directable():
			c.writeDirectLocked(s) // signals the consumer only if bytes are left
		default:
			s.wakeReaderLocked()
		}
		c.mu.Unlock()
		if err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// discard reads and drops n bytes from the network.
func (c *conn) discard(n int) error {
	if n <= 0 {
		return nil
	}
	_, err := io.CopyN(io.Discard, c.nc, int64(n))
	return err
}

func (c *conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	ack := ctrlFrame{kind: ctrlSettingsAck}
	c.mu.Lock()
	err := f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			return err
		}
		switch st.ID {
		case http2.SettingHeaderTableSize:
			ack.table, ack.val = true, st.Val
		case http2.SettingInitialWindowSize:
			delta := int64(st.Val) - c.peerWindow
			c.peerWindow = int64(st.Val)
			for _, s := range c.streams {
				s.sendWindow += delta
				if s.sendWindow > defaultMaxStreamID {
					return connErr(http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window")
				}
			}
			c.sendCond.Broadcast()
		case http2.SettingMaxFrameSize:
			c.peerFrame = int(st.Val)
		case http2.SettingMaxConcurrentStreams:
			c.peerStreams = int(min(st.Val, 1<<20))
		}
		return nil
	})
	c.mu.Unlock()
	if err != nil {
		return err
	}
	c.queueCtrl(ack)
	if !c.sawSettings {
		c.sawSettings = true
		_ = c.nc.SetReadDeadline(time.Time{}) // the header timeout is over
	}
	return nil
}

func (c *conn) onPing(f *http2.PingFrame) {
	if !f.IsAck() {
		c.queueCtrl(ctrlFrame{kind: ctrlPingAck, data: f.Data})
		return
	}
	c.mu.Lock()
	if c.pingOut && f.Data == c.pingData {
		c.pingOut = false
	}
	c.mu.Unlock()
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		c.sendWindow += inc
		if c.sendWindow > defaultMaxStreamID {
			return connErr(http2.ErrCodeFlowControl, "connection window overflow")
		}
		c.sendCond.Broadcast()
		return nil
	}
	s, err := c.openStreamLocked(f.StreamID, "WINDOW_UPDATE")
	if s == nil {
		return err
	}
	s.sendWindow += inc
	if s.sendWindow > defaultMaxStreamID {
		c.resetStreamLocked(s, http2.ErrCodeFlowControl, errors.New("peer overflowed the stream window"))
	}
	c.sendCond.Broadcast()
	return nil
}

// openStreamLocked is the open stream id names: nil for one that has ended (its frames are ignored), and a
// connection error for one that was never opened (a frame on an idle stream).
func (c *conn) openStreamLocked(id uint32, frame string) (*Stream, error) {
	if s := c.streams[id]; s != nil {
		return s, nil
	}
	if c.idleStreamLocked(id) {
		return nil, connErr(http2.ErrCodeProtocol, "%s on idle stream %d", frame, id)
	}
	return nil, nil
}

func (c *conn) onReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.openStreamLocked(f.StreamID, "RST_STREAM")
	if s == nil {
		return err
	}
	s.resetLocked(f.ErrCode, true, nil)
	c.forgetLocked(s)
	return nil
}

func (c *conn) onGoAway(f *http2.GoAwayFrame) {
	c.mu.Lock()
	c.goingAway = true
	if !c.server {
		for id, s := range c.streams {
			if id > f.LastStreamID {
				s.abortLocked(errStreamRefused) // never processed: safe to retry elsewhere
				delete(c.streams, id)
			}
		}
	}
	idle := c.active == 0
	c.mu.Unlock()
	if f.ErrCode != http2.ErrCodeNo {
		c.log.Debug("hbone: peer sent GOAWAY", "peer", c.remote, "code", f.ErrCode, "debug", string(f.DebugData()))
	}
	if idle {
		// Nothing in flight: end our side too (our GOAWAY, then the TLS close and the peer's EOF), rather than
		// closing the socket at once. Frames or the TLS close the peer sent after its GOAWAY may still be unread,
		// and closing over unread bytes makes the kernel reset the connection: a clean end seen as a failure by
		// whatever relays it (an east-west gateway).
		c.goAway()
	}
}

func (c *conn) onRequestHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	c.mu.Lock()
	if s := c.streams[id]; s != nil { // trailers: only legal as the end of the request
		if !f.StreamEnded() {
			c.resetStreamLocked(s, http2.ErrCodeProtocol, errors.New("HEADERS in the middle of a tunnel"))
		} else {
			c.endRecvLocked(s)
		}
		c.mu.Unlock()
		return nil
	}
	if id%2 == 0 || id <= c.lastPeerID {
		c.mu.Unlock()
		return connErr(http2.ErrCodeProtocol, "HEADERS on stream %d (last %d)", id, c.lastPeerID)
	}
	c.lastPeerID = id
	if c.goingAway || c.active >= c.lim.maxStreams {
		if !c.goingAway {
			c.refused++
		}
		c.queueCtrl(ctrlFrame{kind: ctrlReset, stream: id, val: uint32(http2.ErrCodeRefusedStream)})
		tooMany := c.refused > maxRefusedStreams
		c.mu.Unlock()
		if tooMany {
			return connErr(http2.ErrCodeEnhanceYourCalm, "more than %d streams refused", maxRefusedStreams)
		}
		return nil
	}
	s := newStream(c, id)
	s.ctx, s.cancel = context.WithCancelCause(c.ctx)
	s.recvEnded = f.StreamEnded()
	c.streams[id] = s
	c.active++
	c.handlers.Add(1)
	c.mu.Unlock()
	c.onStream(s, f)
	return nil
}

func (c *conn) onResponseHeaders(f *http2.MetaHeadersFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.openStreamLocked(f.StreamID, "HEADERS")
	if s == nil {
		return err
	}
	if s.status != 0 { // trailers
		if f.StreamEnded() {
			c.endRecvLocked(s)
		}
		return nil
	}
	status, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || status < 100 || status > 999 {
		c.resetStreamLocked(s, http2.ErrCodeProtocol, fmt.Errorf("bad :status %q", f.PseudoValue("status")))
		return nil
	}
	if status < 200 {
		return nil // informational; the real answer follows
	}
	s.status = status
	s.recvEnded = f.StreamEnded()
	s.answeredLocked()
	c.forgetLocked(s)
	return nil
}
