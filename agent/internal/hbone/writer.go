package hbone

import (
	"crypto/rand"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Writing. Everything written to the network happens under wmu, in one of two ways:
//
//   - A stream's Write frames its own DATA and writes it in the caller's goroutine (no hand-off). Before its DATA
//     it writes any queued control frames, so resets and acks are never stuck behind a busy stream.
//   - Everything else (acks, window updates, resets, responses, END_STREAM, GOAWAY) is queued as a ctrlFrame
//     and written by whoever next holds wmu: a stream writer, or the control loop, which only ever TryLocks so
//     that it stays free to run the keepalive while a writer is blocked on the network. Whoever unlocks wmu
//     re-kicks the control loop if frames are waiting, so none is left behind.

type ctrlKind uint8

const (
	ctrlSettingsAck ctrlKind = iota
	ctrlPing
	ctrlPingAck
	ctrlWindowUpdate
	ctrlReset
	ctrlGoAway
	ctrlEndStream // empty DATA with END_STREAM
	ctrlResponse  // server: HEADERS with :status
)

type ctrlFrame struct {
	kind   ctrlKind
	stream uint32
	val    uint32 // window increment, error code, :status or the peer's header table size (settings ack)
	data   [8]byte
	end    bool // response: END_STREAM
	table  bool // settings ack: first apply val as the peer's HPACK table size limit
	close  bool // GOAWAY: close the connection once written
	// baggage is the response's baggage header ("" for none): the destination's labels, as ztunnel answers.
	baggage string
}

// queueCtrl adds a control frame and wakes the control loop. It may be called with or without mu held.
func (c *conn) queueCtrl(f ctrlFrame) {
	c.ctrlMu.Lock()
	if len(c.ctrl) >= maxControlQueue {
		c.ctrlOverflow = true
	} else {
		c.ctrl = append(c.ctrl, f)
	}
	c.ctrlMu.Unlock()
	c.wake()
}

func (c *conn) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *conn) ctrlPending() bool {
	c.ctrlMu.Lock()
	defer c.ctrlMu.Unlock()
	return len(c.ctrl) > 0 || c.ctrlOverflow
}

// unlockWrite releases wmu and makes sure frames queued meanwhile get written.
func (c *conn) unlockWrite() {
	c.wmu.Unlock()
	if c.ctrlPending() {
		c.wake()
	}
}

// appendCtrlLocked moves the queued control frames into wbuf. It reports whether the connection must close
// once they are written (a closing GOAWAY was among them, or the queue overflowed).
func (c *conn) appendCtrlLocked() (closeAfter bool) {
	c.ctrlMu.Lock()
	items := c.ctrl
	c.ctrl = c.ctrlSpare[:0]
	c.ctrlSpare = nil
	overflow := c.ctrlOverflow
	c.ctrlMu.Unlock()

	for i := range items {
		if c.appendCtrlFrame(&items[i]) {
			closeAfter = true
		}
	}
	clear(items)
	c.ctrlMu.Lock()
	c.ctrlSpare = items[:0]
	c.ctrlMu.Unlock()
	if overflow {
		c.fr.WriteGoAway(c.lastPeerIDSnapshot(), http2.ErrCodeEnhanceYourCalm, nil)
		c.mu.Lock()
		if c.err == nil {
			c.err = errCtrlOverflow
		}
		c.mu.Unlock()
		closeAfter = true
	}
	return closeAfter
}

func (c *conn) lastPeerIDSnapshot() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastPeerID
}

// appendCtrlFrame frames one control item into wbuf. The Framer's write errors are impossible here (it writes
// into memory and we only pass legal values), so they are not checked.
func (c *conn) appendCtrlFrame(f *ctrlFrame) (closeAfter bool) {
	switch f.kind {
	case ctrlSettingsAck:
		if f.table {
			c.henc.SetMaxDynamicTableSizeLimit(f.val)
		}
		_ = c.fr.WriteSettingsAck()
	case ctrlPing:
		_ = c.fr.WritePing(false, f.data)
	case ctrlPingAck:
		_ = c.fr.WritePing(true, f.data)
	case ctrlWindowUpdate:
		_ = c.fr.WriteWindowUpdate(f.stream, f.val)
	case ctrlReset:
		_ = c.fr.WriteRSTStream(f.stream, http2.ErrCode(f.val))
	case ctrlGoAway:
		_ = c.fr.WriteGoAway(f.stream, http2.ErrCode(f.val), nil)
		return f.close
	case ctrlEndStream:
		_ = c.fr.WriteData(f.stream, true, nil)
	case ctrlResponse:
		c.hbuf.Reset()
		_ = c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(int(f.val))})
		if f.baggage != "" {
			_ = c.henc.WriteField(hpack.HeaderField{Name: "baggage", Value: f.baggage})
		}
		c.appendHeaderBlock(f.stream, f.end)
	}
	return false
}

// appendHeaderBlock frames the encoded block in hbuf as HEADERS plus CONTINUATIONs within the peer's frame size.
func (c *conn) appendHeaderBlock(stream uint32, endStream bool) {
	c.mu.Lock()
	max := c.peerFrame
	c.mu.Unlock()
	block := c.hbuf.Bytes()
	first := block
	if len(first) > max {
		first = first[:max]
	}
	block = block[len(first):]
	_ = c.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: stream, BlockFragment: first, EndStream: endStream, EndHeaders: len(block) == 0,
	})
	for len(block) > 0 {
		frag := block
		if len(frag) > max {
			frag = frag[:max]
		}
		block = block[len(frag):]
		_ = c.fr.WriteContinuation(stream, len(block) == 0, frag)
	}
}

// flushLocked writes wbuf to the network.
func (c *conn) flushLocked() error {
	if c.werr != nil {
		return c.werr
	}
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.wbuf)
	c.wbuf = c.wbuf[:0]
	if err != nil {
		c.failWriteLocked(err)
	}
	return c.werr
}

func (c *conn) failWriteLocked(err error) {
	if c.werr == nil {
		c.werr = fmt.Errorf("write: %w", err)
	}
	// closeWithError takes mu, never wmu: safe to call while holding wmu.
	c.closeWithError(c.werr)
}

// flushCtrl writes queued control frames if wmu is free (see the comment at the top).
func (c *conn) flushCtrl() {
	if !c.wmu.TryLock() {
		return
	}
	closeAfter := c.appendCtrlLocked()
	_ = c.flushLocked() // a failure closes the connection
	c.unlockWrite()
	if closeAfter {
		c.closeAfterGoAway()
	}
}

// writePreamble writes what opens the connection on our side: the client preface (client only), our SETTINGS,
// and the WINDOW_UPDATE that opens the connection window from 64 KiB to 16 MiB.
func (c *conn) writePreamble() error {
	c.wmu.Lock()
	defer c.unlockWrite()
	if !c.server {
		c.wbuf = append(c.wbuf, http2.ClientPreface...)
	}
	_ = c.fr.WriteSettings(c.lim.settings(c.server)...)
	_ = c.fr.WriteWindowUpdate(0, connWindow-defaultPeerWindow)
	return c.flushLocked()
}

// writeData writes p as one DATA frame of stream s (the caller holds send window for len(p)). The frame header
// and the first bytes of p are written from wbuf, the rest straight from p, split so that the TLS records of
// the rest are full: no copy of the payload beyond the first record.
func (c *conn) writeData(s *Stream, p []byte) error {
	c.wmu.Lock()
	defer c.unlockWrite()
	if c.werr != nil {
		return c.werr
	}
	closeAfter := c.appendCtrlLocked()
	c.mu.Lock()
	err := s.sendErrLocked()
	if err != nil {
		c.sendWindow += int64(len(p)) // not sent after all
		c.sendCond.Broadcast()
	}
	c.mu.Unlock()
	if err != nil || closeAfter {
		if ferr := c.flushLocked(); err == nil {
			err = ferr
		}
		if closeAfter {
			c.closeAfterGoAway()
			if err == nil {
				err = errConnClosed
			}
		}
		return err
	}
	c.wbuf = appendFrameHeader(c.wbuf, len(p), http2.FrameData, 0, s.id)
	k := headLen(len(c.wbuf), len(p))
	c.wbuf = append(c.wbuf, p[:k]...)
	if err := c.flushLocked(); err != nil {
		return err
	}
	if k < len(p) {
		if _, err := c.nc.Write(p[k:]); err != nil {
			c.failWriteLocked(err)
			return c.werr
		}
	}
	return nil
}

// headLen is how many payload bytes to copy behind a prefix of the given length so that the remaining payload is
// a whole number of full TLS records.
func headLen(prefix, n int) int {
	k := (prefix+n)%tlsRecord - prefix
	for k < 0 {
		k += tlsRecord
	}
	return min(k, n)
}

func appendFrameHeader(b []byte, length int, t http2.FrameType, flags http2.Flags, stream uint32) []byte {
	return append(b,
		byte(length>>16), byte(length>>8), byte(length),
		byte(t), byte(flags),
		byte(stream>>24), byte(stream>>16), byte(stream>>8), byte(stream))
}

// writeRequest opens a client stream: it takes the next stream ID and writes the HEADERS, both under wmu so
// that IDs go out in increasing order and HPACK state matches the wire order.
func (c *conn) writeRequest(fields []hpack.HeaderField) (*Stream, error) {
	c.wmu.Lock()
	defer c.unlockWrite()
	if c.werr != nil {
		return nil, c.werr
	}
	closeAfter := c.appendCtrlLocked()
	c.mu.Lock()
	if c.closed || closeAfter {
		err := c.err
		c.mu.Unlock()
		_ = c.flushLocked()
		if closeAfter {
			c.closeAfterGoAway()
		}
		if err == nil {
			err = errConnClosed
		}
		return nil, err
	}
	if c.goingAway || c.nextID > defaultMaxStreamID {
		c.mu.Unlock()
		_ = c.flushLocked()
		return nil, errStreamRefused
	}
	s := newStream(c, c.nextID)
	c.nextID += 2
	c.streams[s.id] = s
	c.mu.Unlock()

	c.hbuf.Reset()
	for _, f := range fields {
		_ = c.henc.WriteField(f)
	}
	c.appendHeaderBlock(s.id, false)
	if err := c.flushLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

// controlLoop writes queued control frames, sends keepalive PINGs, drops a connection whose PING goes
// unanswered, and closes idle connections.
func (c *conn) controlLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.lim.tick())
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-c.kick:
			c.flushCtrl()
		case now := <-t.C:
			if err := c.keepalive(now); err != nil {
				c.closeWithError(err)
				return
			}
			c.checkIdle(now)
		}
	}
}

// keepalive sends a PING every keepAliveInterval and fails once one is unanswered for keepAliveTimeout.
func (c *conn) keepalive(now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pingOut {
		if now.Sub(c.pingAt) >= c.lim.keepAliveTimeout {
			return errPingTimeout
		}
		return nil
	}
	if now.Sub(c.pingAt) < c.lim.keepAliveInterval {
		return nil
	}
	c.pingOut = true
	c.pingAt = now
	_, _ = rand.Read(c.pingData[:])
	c.queueCtrl(ctrlFrame{kind: ctrlPing, data: c.pingData})
	return nil
}

// checkIdle closes, with a GOAWAY, a connection that carried no stream for idleTimeout.
func (c *conn) checkIdle(now time.Time) {
	if c.lim.idleTimeout <= 0 {
		return
	}
	c.mu.Lock()
	idle := c.active == 0 && !c.goingAway && now.Sub(c.idleSince) >= c.lim.idleTimeout
	if idle {
		c.goingAway = true
		c.err = errIdle
		c.queueCtrl(ctrlFrame{kind: ctrlGoAway, val: uint32(http2.ErrCodeNo), stream: c.lastPeerID, close: true})
	}
	c.mu.Unlock()
}
