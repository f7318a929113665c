package hbone

import (
	"context"
	"net"
	"net/netip"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Request is an inbound CONNECT that passed the checks hbone does itself (method, authority syntax, illegal
// ports, header list size), handed to the Authorize callback.
type Request struct {
	// PeerIdentity is the client's SPIFFE ID, from its verified certificate.
	PeerIdentity spiffeid.ID
	// LocalAddr is the address the HBONE connection was accepted on; RemoteAddr is the client's.
	LocalAddr, RemoteAddr netip.AddrPort
	// Target is the parsed :authority.
	Target Authority
	// Headers are the regular request headers in wire order (baggage, forwarded, traceparent, ...).
	Headers []Header
	// ForwardedFor is the original client address from the forwarded header, if any (port 0 when absent).
	ForwardedFor netip.AddrPort
	// ForwardedHost is the forwarded header's `host=`: the service the client addressed, as the client says
	// ("" when absent). Telemetry only, never a policy input.
	ForwardedHost string
	// ServerName is the SNI the client sent in the TLS handshake ("" when none): with it, the server chose
	// which certificate to present.
	ServerName string
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

// Decision is the Authorize callback's answer: either refuse (Refuse set), or connect to Target.
type Decision struct {
	// Refuse, when not FlagNone, refuses the tunnel: the server answers Refuse.Status() (400, 401 or 503) and
	// reports the flag and Err to Telemetry.
	Refuse Flag
	Err    error
	// Target is the one address the server connects to. hbone never connects anywhere else.
	Target netip.AddrPort
	// Dial, when set, makes the upstream connection instead of the server's Dialer (for example from the
	// original client's address with IP_TRANSPARENT, or with a socket mark). It gets Target and a context
	// that carries the connect timeout.
	Dial func(ctx context.Context, target netip.AddrPort) (net.Conn, error)
	// Revoker, when set, ends the established tunnel (for example after a policy change) with FlagRevoked.
	Revoker *Revoker
	// Baggage is sent with the 200: the destination's labels (ztunnel answers with them).
	Baggage Baggage
	// Tag is passed to Telemetry in TunnelInfo.Tag.
	Tag any
}

// Allow is a Decision to connect to target.
func Allow(target netip.AddrPort) Decision { return Decision{Target: target} }

// Refuse is a Decision to refuse the tunnel for the given reason.
func Refuse(flag Flag, err error) Decision { return Decision{Refuse: flag, Err: err} }

// AuthorizeFunc decides what to do with an inbound tunnel. It runs in its own goroutine per stream; ctx is
// cancelled if the client gives up or the server closes. It must not retain req after returning.
type AuthorizeFunc func(ctx context.Context, req *Request) Decision
