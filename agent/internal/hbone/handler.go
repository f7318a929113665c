package hbone

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/net/http2"

	"github.com/ambient-agent/ambient-agent/ports"
)

// onStream takes a new inbound stream from the read loop. Requests that fail hbone's own checks are answered
// right there, without a goroutine; the rest go to a handler goroutine owned by the connection.
func (s *Server) onStream(c *conn, st *Stream, f *http2.MetaHeadersFrame) {
	info := &TunnelInfo{Direction: Inbound, Peer: c.peer, Local: c.local, Remote: c.remote, Start: time.Now()}
	req, flag, err := checkRequest(c, st, f, info)
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
	req.srv, req.release = s, release
	go s.handle(req)
}

// checkRequest applies the checks that need no policy: header list size, method, authority, illegal ports.
func checkRequest(c *conn, st *Stream, f *http2.MetaHeadersFrame, info *TunnelInfo) (*Request, Flag, error) {
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
	req := &Request{PeerIdentity: c.peer, LocalIdentity: c.localID, LocalAddr: c.local, RemoteAddr: c.remote,
		Target: target, ServerName: c.serverName, Start: info.Start, st: st}
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

// handle runs the handler on one request, failing closed: a handler that panics or returns without an answer
// gets the request refused as FlagInternal.
// A request handed to RelayAsync is released when that relay ends, not here.
func (s *Server) handle(req *Request) {
	defer func() {
		if !req.detached {
			req.finish()
		}
	}()
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("hbone: handler panicked", "panic", p, "peer", req.PeerIdentity, "target", req.Target)
			s.unanswered(req, fmt.Errorf("handler panicked: %v", p))
		}
	}()
	s.cfg.Handler.ServeHBONE(req)
	if !req.detached {
		s.unanswered(req, errors.New("handler returned without an answer"))
	}
}

// unanswered refuses a request the handler left without an answer, and reports it. One it accepted and left
// (a panic while relaying) is reset: its client must not read the end as a clean close.
func (s *Server) unanswered(req *Request, err error) {
	if req.accepted {
		req.st.cancelWith(err)
		return
	}
	if req.answered {
		return
	}
	e := req.Refuse(FlagInternal, err)
	s.cfg.Handler.Refused(req.Info(), FlagInternal, e)
}

// Info describes the request as a TunnelInfo (as Handler.Refused gets it), for records that cover both.
func (req *Request) Info() *TunnelInfo {
	return &TunnelInfo{Direction: Inbound, Peer: req.PeerIdentity, ServerName: req.ServerName,
		Local: req.LocalAddr, Remote: req.RemoteAddr, Authority: req.Target.String(), Target: req.Target.Addr,
		ForwardedFor: req.ForwardedFor, ForwardedHost: req.ForwardedHost, Start: req.Start}
}

// refuse answers a stream hbone refuses on its own with the flag's status and reports the failure.
func (s *Server) refuse(c *conn, st *Stream, info *TunnelInfo, flag Flag, err error) {
	e := refuseStream(st, flag, info.Authority, err)
	s.log.Debug("hbone: tunnel refused", "peer", c.peer, "remote", c.remote, "err", e)
	s.cfg.Handler.Refused(info, flag, e)
}

// refuseStream answers st with the flag's status (nothing for FlagReset: the stream is gone) and returns the
// failure.
func refuseStream(st *Stream, flag Flag, authority string, err error) *Error {
	if err == nil {
		err = errors.New("refused")
	}
	e := &Error{Flag: flag, Status: flag.Status(), Op: "connect", Addr: authority, Err: err}
	if flag != FlagReset {
		st.respond(e.Status, true, "")
	}
	return e
}

// finish releases the stream and its slot once its handler is done.
func (s *Server) finish(c *conn, st *Stream) {
	_ = st.Close()
	c.releaseSlot()
	c.handlers.Done()
}

// finish releases a request handed to a handler goroutine (Server.handle), once its handler, or the relay it
// handed the request to (RelayAsync), is done.
func (r *Request) finish() {
	r.release()
	r.srv.finish(r.st.c, r.st)
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
