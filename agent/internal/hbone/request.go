package hbone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Handler serves the inbound CONNECT requests of a Server. It is the one thing hbone calls on the server side
// besides the certificate choice (ServerConfig.Certificate).
type Handler interface {
	// ServeHBONE answers one request that passed hbone's own checks (method, authority syntax, illegal ports,
	// header list size, limits): Refuse it, or Accept it and Relay (or RelayAsync, and return). It runs in a
	// goroutine of its own per request; a request left unanswered when it returns is refused as FlagInternal.
	ServeHBONE(r *Request)
	// Refused is told of every connection or request the server refused on its own, before any ServeHBONE: a
	// failed TLS handshake or preface (empty Authority), a malformed CONNECT, an illegal port, a limit. It is
	// called from connection goroutines and must be fast.
	Refused(info *TunnelInfo, flag Flag, err error)
}

// Request is an inbound CONNECT handed to the Handler, which answers it. Its fields are read-only.
type Request struct {
	// PeerIdentity is the client's SPIFFE ID, from its verified certificate; LocalIdentity the identity this
	// server presented in the handshake (ServerConfig.Certificate's choice).
	PeerIdentity, LocalIdentity spiffeid.ID
	// LocalAddr is the address the HBONE connection was accepted on; RemoteAddr is the client's.
	LocalAddr, RemoteAddr netip.AddrPort
	// Target is the parsed :authority.
	Target Authority
	// Headers are the regular request headers in wire order (baggage, forwarded, traceparent, ...), until
	// Accept releases them.
	Headers []Header
	// ForwardedFor is the original client address from the forwarded header, if any (port 0 when absent).
	ForwardedFor netip.AddrPort
	// ForwardedHost is the forwarded header's `host=`: the service the client addressed, as the client says
	// ("" when absent). Telemetry only, never a policy input.
	ForwardedHost string
	// ServerName is the SNI the client sent in the TLS handshake ("" when none).
	ServerName string
	// Start is when the request arrived.
	Start time.Time

	st       *Stream
	answered bool // by Refuse or Accept; only the handler's goroutine answers
	accepted bool // answered 200: only then may it relay
	// srv and release are set when the request goes to a handler goroutine: release frees its stream limit slot.
	// detached: RelayAsync took the request over; then its end, not the handler's return, releases it (finish).
	srv      *Server
	release  func()
	detached bool
}

// Header returns the value of the first header with that (case-insensitive) name, or "".
func (r *Request) Header(name string) string {
	for _, h := range r.Headers {
		if strings.EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return ""
}

// TargetIsLocal reports whether the target is the address the connection was accepted on: ztunnel answers 400
// (FlagWrongTarget) otherwise, unless this agent is a waypoint for the target (spec/routing.md, inbound step 3).
func (r *Request) TargetIsLocal() bool {
	return !r.Target.IsHostname() && r.Target.Addr.Addr() == r.LocalAddr.Addr()
}

// Context is cancelled when the client gives up on the request (it resets the stream, or its connection ends)
// or the server closes.
func (r *Request) Context() context.Context { return r.st.ctx }

// Refuse answers the request with the flag's status (400, 401 or 503; nothing for FlagReset, whose stream is
// gone) and returns the failure as an *Error, for the handler's records. A request is answered once: a second
// answer is ignored.
func (r *Request) Refuse(flag Flag, err error) *Error {
	if r.answered {
		return &Error{Flag: flag, Status: flag.Status(), Op: "connect", Addr: r.Target.String(), Err: err}
	}
	r.answered = true
	return refuseStream(r.st, flag, r.Target.String(), err)
}

// RefuseDial refuses the request after the upstream connection failed: 503 as FlagUpstreamConnect, or
// FlagUpstreamTimeout if the connect timed out; FlagReset if the client went away meanwhile.
func (r *Request) RefuseDial(target netip.AddrPort, err error) *Error {
	if cause := context.Cause(r.st.ctx); cause != nil && !errors.Is(err, context.DeadlineExceeded) {
		return r.Refuse(FlagReset, fmt.Errorf("client went away: %w", cause))
	}
	flag := FlagUpstreamConnect
	if timeoutFlag(err, FlagUpstreamConnect) == FlagTimeout {
		flag = FlagUpstreamTimeout
	}
	return r.Refuse(flag, fmt.Errorf("connect %s: %w", target, err))
}

// Accept answers 200 with the destination's baggage (ztunnel answers with its labels). It fails with a
// FlagReset *Error if the client reset the stream first.
func (r *Request) Accept(b Baggage) error {
	if r.answered {
		return newError(FlagInternal, "respond", r.RemoteAddr.String(), errors.New("request already answered"))
	}
	r.answered = true
	if !r.st.respond(200, false, b.String()) {
		return newError(FlagReset, "respond", r.RemoteAddr.String(), errors.New("stream reset before the answer"))
	}
	r.accepted = true
	r.Headers = nil // a tunnel's life does not hold its request's headers: read them before Accept
	return nil
}

// Bytes reports what the tunnel has carried so far: sent to the client, received from it.
func (r *Request) Bytes() (sent, received int64) { return r.st.bytes() }

// Relay copies bytes between an accepted tunnel and its upstream connection until both directions have ended
// (half-closes are passed on), then reports what it carried. revoker (nil: none) ends it early with FlagRevoked.
// It does not close up. A request that was not accepted relays nothing: it is refused as FlagInternal.
func (r *Request) Relay(up net.Conn, revoker *Revoker) TunnelStats {
	if !r.accepted {
		err := r.Refuse(FlagInternal, errors.New("relay before the request was accepted"))
		return TunnelStats{Duration: time.Since(r.Start), Flag: FlagInternal, Err: err}
	}
	flag, err := pipe(r.st, up, revoker)
	return TunnelStats{
		BytesSent:     r.st.BytesSent(),
		BytesReceived: r.st.BytesReceived(),
		Duration:      time.Since(r.Start),
		Flag:          flag,
		Err:           err,
	}
}

// RelayAsync is Relay on a goroutine of its own, which calls done with what Relay returns; the handler may return
// at once. The tunnel then lives on a goroutine whose stack holds only the relay, which the runtime keeps small
// (4 KiB), rather than on the handler's, which grew while deciding and connecting. A request that was not
// accepted is refused and done is called before RelayAsync returns. done runs once; a panic in it is logged, and
// resets the tunnel if it is still open, as a panic in ServeHBONE would. The server's drain waits for the relay,
// not for the handler's return: a handler must not work on after RelayAsync. A second call relays nothing
// (FlagInternal).
func (r *Request) RelayAsync(up net.Conn, revoker *Revoker, done func(TunnelStats)) {
	if r.detached {
		done(TunnelStats{Duration: time.Since(r.Start), Flag: FlagInternal, Err: errors.New("relayed twice")})
		return
	}
	if !r.accepted || r.srv == nil {
		done(r.Relay(up, revoker))
		return
	}
	r.detached = true
	go r.relayDetached(up, revoker, done)
}

func (r *Request) relayDetached(up net.Conn, revoker *Revoker, done func(TunnelStats)) {
	defer r.finish()
	defer func() {
		if p := recover(); p != nil {
			r.srv.log.Error("hbone: relay panicked", "panic", p, "peer", r.PeerIdentity, "target", r.Target)
			r.st.cancelWith(fmt.Errorf("relay panicked: %v", p))
		}
	}()
	done(r.Relay(up, revoker))
}

// Hijack hands an accepted tunnel over as a connection of its own, for a server that reads and writes it itself
// (the waypoint's HTTP server) rather than relaying it. Like RelayAsync, the handler returns at once and must not
// use the request after; the server's drain waits until the connection is closed. Closing it ends the tunnel
// (once) and calls done with what it carried. revoker (nil: none) ends it early: the stream is reset and the
// server's reads and writes fail, and done reports FlagRevoked. A request that was not accepted is not handed
// over.
func (r *Request) Hijack(revoker *Revoker, done func(TunnelStats)) (net.Conn, error) {
	switch {
	case !r.accepted:
		return nil, newError(FlagInternal, "hijack", r.RemoteAddr.String(), errors.New("the request was not accepted"))
	case r.detached:
		return nil, newError(FlagInternal, "hijack", r.RemoteAddr.String(), errors.New("the request was handed over already"))
	}
	r.detached = true
	h := &hijacked{Stream: r.st, r: r, done: done, unbind: func() {}}
	if revoker != nil {
		h.unbind = revoker.bind(func() {
			h.revoked.Store(true)
			r.st.cancelWith(errRevoked)
		})
	}
	return h, nil
}

// hijacked is a tunnel handed over by Hijack.
type hijacked struct {
	*Stream
	r       *Request
	done    func(TunnelStats)
	unbind  func()
	revoked atomic.Bool
	once    sync.Once
}

func (h *hijacked) Close() error {
	err := h.Stream.Close()
	h.once.Do(func() {
		h.unbind()
		s := TunnelStats{BytesSent: h.Stream.BytesSent(), BytesReceived: h.Stream.BytesReceived(), Duration: time.Since(h.r.Start)}
		if h.revoked.Load() {
			s.Flag, s.Err = FlagRevoked, newError(FlagRevoked, "tunnel", h.r.RemoteAddr.String(), errRevoked)
		}
		h.done(s)
		if h.r.srv != nil {
			h.r.finish()
		}
	})
	return err
}
