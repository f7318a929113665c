package hbone

import "os"

// reserveSend waits until s may send, and takes up to want bytes of window from both the stream and the
// connection, never more than the peer's frame size.
func (c *conn) reserveSend(s *Stream, want int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if err := s.sendErrLocked(); err != nil {
			return 0, err
		}
		if deadlinePassed(s.writeDL) {
			return 0, os.ErrDeadlineExceeded
		}
		if s.sendWindow > 0 && c.sendWindow > 0 {
			n := int64(min(want, c.peerFrame))
			n = min(n, s.sendWindow, c.sendWindow)
			s.sendWindow -= n
			c.sendWindow -= n
			return int(n), nil
		}
		c.sendCond.Wait()
	}
}

// creditLocked records n received bytes as consumed (by the application, or dropped) and refunds the peer with
// WINDOW_UPDATE once a quarter of a window has accumulated. s is nil for bytes no stream will consume.
func (c *conn) creditLocked(s *Stream, n int) {
	if n <= 0 || c.closed {
		return
	}
	c.recvUnacked += int64(n)
	if c.recvUnacked >= connWindow/windowUpdateDivisor {
		c.queueCtrl(ctrlFrame{kind: ctrlWindowUpdate, val: uint32(c.recvUnacked)})
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
	}
	if s == nil || s.recvEnded || s.reset || s.released {
		return
	}
	s.recvUnacked += int64(n)
	if s.recvUnacked >= streamWindow/windowUpdateDivisor {
		c.queueCtrl(ctrlFrame{kind: ctrlWindowUpdate, stream: s.id, val: uint32(s.recvUnacked)})
		s.recvWindow += s.recvUnacked
		s.recvUnacked = 0
	}
}
