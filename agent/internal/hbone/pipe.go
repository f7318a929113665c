package hbone

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"syscall"

	"golang.org/x/net/http2"

	"github.com/ambient-agent/ambient-agent/agent/internal/bufcopy"
)

var errRevoked = errors.New("tunnel revoked")

// pipe copies bytes between an established inbound tunnel and its upstream connection until both directions
// have ended. An end of stream in one direction is passed on as a half-close (END_STREAM <-> CloseWrite) while
// the other keeps flowing; an error in either direction tears both down. A peer's RST_STREAM with NO_ERROR or
// CANCEL is an end of stream, not an error. It returns FlagNone for a tunnel that ended normally, else the flag
// and cause. revoker.Revoke ends the tunnel with FlagRevoked.
//
// A stream that is reset (by either side) or loses its connection can carry nothing more in either direction,
// so the upstream connection is closed at once: a copy blocked reading an idle upstream must not outlive it.
func pipe(st *Stream, up net.Conn, revoker *Revoker) (Flag, error) {
	stopCloser := context.AfterFunc(st.ctx, func() { _ = up.Close() })
	defer stopCloser()
	var revoked atomic.Bool
	if revoker != nil {
		unbind := revoker.bind(func() {
			revoked.Store(true)
			st.cancelWith(errRevoked)
			_ = up.Close()
		})
		defer unbind()
	}

	// tunnel -> upstream: the read loop writes to up itself; a goroutine runs only for what up does not take.
	downDone := make(chan error, 1)
	st.WriteToAsync(up, func(_ int64, err error) {
		if err == nil {
			err = closeWrite(up)
		}
		if err != nil {
			st.cancelWith(err)
			_ = up.Close()
		}
		downDone <- err
	})

	// upstream -> tunnel, on this goroutine.
	var upErr error
	if tc, ok := up.(*net.TCPConn); ok {
		// An idle upstream holds no buffer (a tunnel's ReadFrom would hold 64 KiB for its life).
		_, upErr = bufcopy.FromTCP(st, tc, st.c.bufs)
	} else {
		_, upErr = st.ReadFrom(up)
	}
	if upErr == nil {
		upErr = st.CloseWrite()
	}
	if upErr != nil {
		st.cancelWith(upErr)
		_ = up.Close()
	}
	downErr := <-downDone

	switch {
	case revoked.Load():
		return FlagRevoked, newError(FlagRevoked, "tunnel", st.c.remote.String(), errRevoked)
	case downErr != nil:
		return FlagOf(downErr), downErr
	case upErr != nil && !st.endedByPeer():
		return FlagOf(upErr), upErr
	}
	return FlagNone, nil
}

// closeWrite half-closes c if it can; a connection without half-close keeps both directions open. A peer that
// already closed the connection (ENOTCONN: it reset it, or closed both ways after its answer) has nothing left to
// be told: that is no failure of the tunnel.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ENOTCONN) {
			return err
		}
	}
	return nil
}

// endedByPeer reports whether the peer ended the stream with RST_STREAM NO_ERROR or CANCEL.
func (st *Stream) endedByPeer() bool {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return st.reset && st.resetRemote && (st.resetCode == http2.ErrCodeNo || st.resetCode == http2.ErrCodeCancel)
}
