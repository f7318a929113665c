package proxy

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// Request mirrors (RequestMirror filters): a copy of a share of a rule's requests goes to another service of the
// route's namespace, over HBONE with the waypoint's identity like the request itself, and its answer is dropped.
// As Envoy's shadows: the copy's Host has "-shadow" appended, and the request never waits for its copy. A copy's
// body is fed by the request's own reads: a copy that falls mirrorBacklog behind is abandoned, and one whose
// request did not read its whole body is aborted.

const (
	// l7MaxMirrors bounds the copies in flight on the host: past it a copy is not sent.
	l7MaxMirrors = 128
	// mirrorBacklog bounds how far a copy's body may fall behind its request's.
	mirrorBacklog = 256 << 10
	// mirrorTimeout bounds a copy whose rule sets no timeout.
	mirrorTimeout = time.Minute
	// mirrorDrain is what is read of a copy's answer so that its connection can be kept.
	mirrorDrain = 64 << 10
)

var (
	errMirrorBehind  = errors.New("mirror: fell too far behind the request's body")
	errMirrorAborted = errors.New("mirror: the request ended before its body did")
)

// sendMirrors sends the copies of req that u's rule asks for, and makes req's body feed theirs; the caller calls
// the returned end once the request is done, which aborts the copies whose body did not end. Nothing it does fails
// the request.
func (s *l7Server) sendMirrors(req *http.Request, snap *state.Snapshot, call waypointCall, u *upstream) (end func()) {
	end = func() {}
	a := u.action
	if a == nil || len(a.Mirrors) == 0 || req.Header.Get("Upgrade") != "" {
		return end
	}
	wpID, err := call.wt.wp.Identity()
	if err != nil {
		return end
	}
	// As the reverse proxy decides: a request of length 0 (an HTTP/2 request ended with its headers among them)
	// sends no body.
	hasBody := req.Body != nil && req.Body != http.NoBody && req.ContentLength != 0
	var tee *teeBody
	for _, m := range a.Mirrors {
		if !m.Sample(rand.IntN) {
			continue
		}
		svc, ok := snap.ServiceByKey(m.Backend.Key())
		if !ok {
			s.h.d.Log.Debug("waypoint: mirror service not known", "service", m.Backend.Key(), "route", a.Route)
			continue
		}
		w, addr, err := s.h.pickEndpoint(snap, waypointTarget{wp: call.wt.wp, svc: svc}, netip.AddrPortFrom(call.target.Addr(), m.Backend.Port))
		if err != nil {
			s.h.d.Log.Debug("waypoint: no endpoint to mirror to", "service", m.Backend.Key(), "err", err)
			continue
		}
		expected, err := w.Identity()
		if err != nil {
			continue
		}
		select {
		case s.mirrorSlots <- struct{}{}:
		default:
			s.h.d.Log.Debug("waypoint: too many mirrored requests in flight; copy not sent", "service", m.Backend.Key())
			continue
		}
		timeout := mirrorTimeout
		if a.Timeout > 0 {
			timeout = a.Timeout
		}
		ctx, cancel := context.WithTimeout(context.WithValue(s.ctx, upstreamKey{}, upstreamDial{w: w}), timeout)
		out := req.Clone(ctx)
		out.RequestURI = ""
		// What the reverse proxy does to the request itself, in its order: hop-by-hop headers out (a `te: trailers`
		// kept), the client's forwarding headers out, then the rule's changes.
		trailers := httpguts.HeaderValuesContainsToken(req.Header["Te"], "trailers")
		removeHopByHop(out.Header)
		if trailers {
			out.Header.Set("Te", "trailers")
		}
		for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
			out.Header.Del(h)
		}
		u.prepare(out, req)
		out.Host = shadowHost(out.Host)
		out.URL.Scheme, out.URL.Host = "http", addr.String()
		out.Body = http.NoBody
		if hasBody {
			if tee == nil {
				tee = &teeBody{ReadCloser: req.Body}
				req.Body = tee
			}
			body := tee.copy()
			context.AfterFunc(ctx, func() { _ = body.Close() }) // a copy never outlives its context
			out.Body = body
		}
		t := s.transport(identityPair{wpID, expected}, upstreamH2(svc, m.Backend.Port))
		go func() {
			defer func() { <-s.mirrorSlots }()
			defer cancel()
			resp, err := t.RoundTrip(out)
			if err != nil {
				s.h.d.Log.Debug("waypoint: mirrored request failed", "service", m.Backend.Key(), "dst", addr, "err", err)
				return
			}
			_, _ = io.CopyN(io.Discard, resp.Body, mirrorDrain)
			_ = resp.Body.Close()
			s.h.d.Log.Debug("waypoint: mirrored request", "service", m.Backend.Key(), "dst", addr, "response_code", resp.StatusCode)
		}()
	}
	if tee != nil {
		end = tee.end
	}
	return end
}

// shadowHost is host with "-shadow" appended to its name, as Envoy names its shadow requests' authority.
func shadowHost(host string) string {
	if h, port, err := net.SplitHostPort(host); err == nil {
		return net.JoinHostPort(h+"-shadow", port)
	}
	return host + "-shadow"
}

// hopByHop are the headers of one connection, never sent on (RFC 9110, 7.6.1).
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// removeHopByHop removes from h the hop-by-hop headers and those its Connection header names.
func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
}

// teeBody is a request body whose reads also feed its copies' bodies; end (when the request is done) aborts the
// copies that have not had their whole body. (The reverse proxy never closes the body it is given.)
type teeBody struct {
	io.ReadCloser
	copies []*mirrorBody
}

func (t *teeBody) copy() *mirrorBody {
	b := &mirrorBody{}
	b.cond.L = &b.mu
	t.copies = append(t.copies, b)
	return b
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	for _, c := range t.copies {
		c.feed(p[:n], err)
	}
	return n, err
}

func (t *teeBody) end() {
	for _, c := range t.copies {
		c.feed(nil, errMirrorAborted)
	}
}

func (t *teeBody) Close() error {
	t.end()
	return t.ReadCloser.Close()
}

// mirrorBody is a copy's body: what its request has read and the copy has not yet, at most mirrorBacklog.
type mirrorBody struct {
	mu     sync.Mutex
	cond   sync.Cond
	buf    []byte
	err    error // what Read returns once buf is empty: io.EOF, or why the copy ends
	closed bool
}

func (b *mirrorBody) feed(p []byte, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil || b.closed {
		return
	}
	if len(b.buf)+len(p) > mirrorBacklog {
		b.buf, b.err = nil, errMirrorBehind
	} else {
		b.buf = append(b.buf, p...)
		b.err = err
	}
	b.cond.Broadcast()
}

func (b *mirrorBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.buf) == 0 && b.err == nil && !b.closed {
		b.cond.Wait()
	}
	switch {
	case b.closed:
		return 0, net.ErrClosed
	case len(b.buf) > 0:
		n := copy(p, b.buf)
		b.buf = b.buf[n:]
		return n, nil
	}
	return 0, b.err
}

func (b *mirrorBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed, b.buf = true, nil
	b.cond.Broadcast()
	return nil
}
