package hbone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/net/http2"
)

// maxDialAttempts bounds retries of a tunnel whose stream the server refused before processing it (GOAWAY
// race, REFUSED_STREAM): such a stream is safe to send again on another connection.
const maxDialAttempts = 3

// Dial opens tunnel t to t.Authority through the HBONE server at t.Gateway, on a pooled connection. On success
// the peer answered 200 and the Stream carries the tunnel; Close it when done. A non-200 answer gives an *Error
// with FlagConnect and the status; other failures give an *Error with their flag.
func (p *Pool) Dial(ctx context.Context, t Tunnel) (*Stream, error) {
	key := t.Key()
	info := &TunnelInfo{
		Direction:    Outbound,
		Remote:       key.Addr,
		Authority:    t.Authority,
		ForwardedFor: t.ForwardedFor,
		Start:        time.Now(),
	}
	if a, err := ParseAuthority(t.Authority); err != nil {
		return nil, p.failed(info, newError(FlagBadRequest, "dial", t.Authority, err))
	} else {
		info.Target = a.Addr
	}
	var lastErr error
	for attempt := 0; attempt < maxDialAttempts; attempt++ {
		c, err := p.acquire(ctx, &t, key)
		if err != nil {
			return nil, p.failed(info, err)
		}
		info.Peer, info.Local, info.Remote = c.peer, c.local, c.remote
		st, err := p.roundTrip(ctx, c, &t)
		if err == nil {
			p.opened(st, info)
			return st, nil
		}
		lastErr = err
		// Refused, or never sent (its connection closed under it, as a draining server's does after GOAWAY):
		// the server did not see it, another connection may take it.
		if !errors.Is(err, errStreamRefused) && !errors.Is(err, errNotSent) {
			break
		}
	}
	return nil, p.failed(info, lastErr)
}

func (p *Pool) failed(info *TunnelInfo, err error) error {
	flag := FlagOf(err)
	if errors.Is(err, errStreamRefused) {
		flag = FlagOverloaded
		err = newError(flag, "connect", info.Authority, err)
	}
	p.tel.TunnelFailed(info, flag, err)
	return err
}

// errNotSent: the CONNECT was not written (its connection failed first); the server never saw it.
var errNotSent = errors.New("request not sent")

// roundTrip sends the CONNECT on c (whose slot is reserved) and waits for the answer.
func (p *Pool) roundTrip(ctx context.Context, c *conn, req *Tunnel) (*Stream, error) {
	st, err := c.writeRequest(requestFields(req))
	if err != nil {
		c.releaseSlot()
		if errors.Is(err, errStreamRefused) {
			return nil, err
		}
		// A request that could not be written was not seen by the server: Dial may try another connection.
		return nil, newError(FlagOf(err), "connect", req.Authority, fmt.Errorf("%w: %w", errNotSent, err))
	}
	st.onClose = func(*Stream) { c.releaseSlot() }

	t := time.NewTimer(p.cfg.ResponseTimeout)
	defer t.Stop()
	select {
	case <-st.answered:
	case <-ctx.Done():
		_ = st.Close()
		return nil, newError(timeoutFlag(ctx.Err(), FlagReset), "connect", req.Authority, ctx.Err())
	case <-t.C:
		_ = st.Close()
		return nil, newError(FlagTimeout, "connect", req.Authority, errors.New("no answer to CONNECT"))
	}

	c.mu.Lock()
	status, reset := st.status, st.reset
	var err2 error
	if reset {
		if (st.resetRemote && st.resetCode == http2.ErrCodeRefusedStream) || errors.Is(st.cause, errStreamRefused) {
			err2 = errStreamRefused
		} else {
			err2 = st.failureLocked()
		}
	}
	c.mu.Unlock()
	switch {
	case status == 200:
		return st, nil // established; a reset that followed at once is seen by Read
	case status != 0:
		_ = st.Close()
		return nil, &Error{Flag: FlagConnect, Status: status, Op: "connect", Addr: req.Authority}
	default:
		_ = st.Close()
		return nil, err2
	}
}

// opened reports the tunnel and arranges its TunnelClosed when the caller closes the stream.
func (p *Pool) opened(st *Stream, info *TunnelInfo) {
	c := st.c
	info.Bytes = st.bytes
	p.tel.TunnelOpened(info)
	st.onClose = func(st *Stream) {
		c.releaseSlot()
		flag, err := st.endState()
		p.tel.TunnelClosed(info, TunnelStats{
			BytesSent:     st.BytesSent(),
			BytesReceived: st.BytesReceived(),
			Duration:      time.Since(info.Start),
			Flag:          flag,
			Err:           err,
		})
	}
}

// endState says how a released stream ended: normally (both sides ended, a peer's NO_ERROR/CANCEL reset, or
// our own Close), or with a failure.
func (st *Stream) endState() (Flag, error) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !st.reset || errors.Is(st.cause, net.ErrClosed) ||
		(st.resetRemote && (st.resetCode == http2.ErrCodeNo || st.resetCode == http2.ErrCodeCancel)) {
		return FlagNone, nil
	}
	err := st.failureLocked()
	return FlagOf(err), err
}
