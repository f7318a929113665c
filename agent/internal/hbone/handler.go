package hbone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/net/http2"

	"github.com/ambient-agent/ambient-agent/ports"
)

// onStream takes a new inbound stream from the read loop. Requests that fail hbone's own checks are answered
// right there, without a goroutine; the rest go to a handler goroutine owned by the connection.
func (s *Server) onStream(c *conn, st *Stream, f *http2.MetaHeadersFrame) {
	info := &TunnelInfo{Direction: Inbound, Peer: c.peer, Local: c.local, Remote: c.remote, Start: time.Now()}
	req, flag, err := checkRequest(c, f, info)
	if flag != FlagNone {
		s.refuse(c, st, info, flag, err)
		s.finish(c, st)
		return
	}
	release := func() {}
	if s.cfg.Streams != nil {
		var limit string
		if release, limit = s.cfg.Streams.Acquire(c.remote.Addr()); release == nil {
			s.refuse(c, st, info, FlagOverloaded, fmt.Errorf("streams: the %s limit is reached", limit))
			s.finish(c, st)
			if s.cfg.Refused != nil {
				s.cfg.Refused(c.remote, "stream", limit)
			}
			return
		}
	}
	go func() {
		defer release()
		s.handle(c, st, req, info)
	}()
}

// checkRequest applies the checks that need no policy: header list size, method, authority, illegal ports.
func checkRequest(c *conn, f *http2.MetaHeadersFrame, info *TunnelInfo) (*Request, Flag, error) {
	info.Authority = f.PseudoValue("authority")
	if f.Truncated {
		return nil, FlagHeadersTooLarge, errors.New("header list over the limit")
	}
	if m := f.PseudoValue("method"); m != "CONNECT" {
		return nil, FlagBadRequest, fmt.Errorf("method %q is not CONNECT", m)
	}
	for _, p := range []string{"scheme", "path", "protocol"} {
		if f.PseudoValue(p) != "" {
			return nil, FlagBadRequest, fmt.Errorf("CONNECT with :%s", p)
		}
	}
	target, err := ParseAuthority(info.Authority)
	if err != nil {
		return nil, FlagBadRequest, err
	}
	if ports.Illegal(target.Port) {
		return nil, FlagIllegalPort, fmt.Errorf("target port %d is one of the agent's own", target.Port)
	}
	req := &Request{PeerIdentity: c.peer, LocalAddr: c.local, RemoteAddr: c.remote, Target: target, ServerName: c.serverName}
	for _, h := range f.RegularFields() {
		req.Headers = append(req.Headers, Header{Name: h.Name, Value: h.Value})
		if h.Name == "forwarded" && !req.ForwardedFor.IsValid() {
			req.ForwardedFor, req.ForwardedHost = parseForwardedFor(h.Value), parseForwardedHost(h.Value)
		}
	}
	info.Target = target.Addr
	info.ForwardedFor, info.ForwardedHost = req.ForwardedFor, req.ForwardedHost
	return req, FlagNone, nil
}

// handle runs one inbound tunnel: authorize, connect upstream, answer, copy.
func (s *Server) handle(c *conn, st *Stream, req *Request, info *TunnelInfo) {
	defer s.finish(c, st)
	dec := s.authorize(st.ctx, req)
	info.Tag = dec.Tag
	if dec.Refuse != FlagNone {
		s.refuse(c, st, info, dec.Refuse, dec.Err)
		return
	}
	switch {
	case !dec.Target.IsValid():
		s.refuse(c, st, info, FlagInternal, errors.New("authorize allowed the tunnel without a target"))
		return
	case ports.Illegal(dec.Target.Port()):
		s.refuse(c, st, info, FlagIllegalPort, fmt.Errorf("decided target %s is on one of the agent's own ports", dec.Target))
		return
	}
	info.Target = dec.Target

	up, err := s.dialUpstream(st.ctx, dec)
	if err != nil {
		flag := timeoutFlag(err, FlagUpstreamConnect)
		if flag == FlagTimeout {
			flag = FlagUpstreamTimeout
		}
		if cause := context.Cause(st.ctx); cause != nil && !errors.Is(err, context.DeadlineExceeded) {
			flag, err = FlagReset, fmt.Errorf("client went away: %w", cause)
		}
		s.refuse(c, st, info, flag, fmt.Errorf("connect %s: %w", dec.Target, err))
		return
	}
	defer up.Close()
	if !st.respond(200, false, dec.Baggage.String()) {
		s.tel.TunnelFailed(info, FlagReset, newError(FlagReset, "respond", c.remote.String(), errors.New("stream reset before the answer")))
		return
	}
	info.Bytes = st.bytes
	s.tel.TunnelOpened(info)
	flag, err := pipe(st, up, dec.Revoker)
	s.tel.TunnelClosed(info, TunnelStats{
		BytesSent:     st.BytesSent(),
		BytesReceived: st.BytesReceived(),
		Duration:      time.Since(info.Start),
		Flag:          flag,
		Err:           err,
	})
}

// authorize calls the callback, failing closed if it panics.
func (s *Server) authorize(ctx context.Context, req *Request) (dec Decision) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("hbone: authorize callback panicked", "panic", r, "peer", req.PeerIdentity, "target", req.Target)
			dec = Refuse(FlagInternal, fmt.Errorf("authorize panicked: %v", r))
		}
	}()
	return s.cfg.Authorize(ctx, req)
}

func (s *Server) dialUpstream(ctx context.Context, dec Decision) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	if dec.Dial != nil {
		return dec.Dial(ctx, dec.Target)
	}
	return s.dialer.DialContext(ctx, "tcp", dec.Target.String())
}

// refuse answers the stream with the flag's status and reports the failure.
func (s *Server) refuse(c *conn, st *Stream, info *TunnelInfo, flag Flag, err error) {
	status := flag.Status()
	if err == nil {
		err = errors.New("refused")
	}
	e := &Error{Flag: flag, Status: status, Op: "connect", Addr: info.Authority, Err: err}
	if flag != FlagReset {
		st.respond(status, true, "")
	}
	s.log.Debug("hbone: tunnel refused", "peer", c.peer, "remote", c.remote, "err", e)
	s.tel.TunnelFailed(info, flag, e)
}

// finish releases the stream and its slot once its handler is done.
func (s *Server) finish(c *conn, st *Stream) {
	_ = st.Close()
	c.releaseSlot()
	c.handlers.Done()
}

// respond queues the response HEADERS. With end, the response ends the stream; if the client is still sending,
// the stream is then reset with NO_ERROR, asking it to stop (RFC 9113 section 8.1). It reports false if the
// stream was already gone.
func (st *Stream) respond(status int, end bool, baggage string) bool {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.reset || st.released || c.closed {
		return false
	}
	c.queueCtrl(ctrlFrame{kind: ctrlResponse, stream: st.id, val: uint32(status), end: end, baggage: baggage})
	if end {
		st.sendEnded = true
		if !st.recvEnded {
			st.resetLocked(http2.ErrCodeNo, false, errors.New("refused"))
			c.queueCtrl(ctrlFrame{kind: ctrlReset, stream: st.id, val: uint32(http2.ErrCodeNo)})
		}
		c.forgetLocked(st)
	}
	return true
}

// cancelWith resets the stream from our side without releasing it. It uses
// CONNECT_ERROR (RFC 9113 8.5: the tunneled connection was reset or closed
// abnormally), not CANCEL, because peers read a CANCEL as a clean EOF and a
// revoked tunnel must end as a failure on the client side too.
func (st *Stream) cancelWith(cause error) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !st.released && !st.reset && !(st.sendEnded && st.recvEnded) {
		c.resetStreamLocked(st, http2.ErrCodeConnect, cause)
	}
}
