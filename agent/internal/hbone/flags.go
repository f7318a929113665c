package hbone

import "net/http"

// Flag names why a tunnel failed or ended abnormally. The set is closed: these constants are the only values
// hbone produces, and each is used unchanged in errors, telemetry, metrics and access logs.
type Flag string

// The vocabulary. Server-side refusals map to exactly one HTTP status each (see Status).
const (
	// FlagNone means no failure.
	FlagNone Flag = ""

	// FlagConnect: the peer answered the CONNECT with a status other than 200 (client side; ztunnel's flag).
	FlagConnect Flag = "CONNECT"
	// FlagDial: the TCP connection to the peer's HBONE port could not be made (client side).
	FlagDial Flag = "DIAL"
	// FlagTLS: the TLS handshake failed, the peer presented no usable SPIFFE identity, or not an expected one.
	FlagTLS Flag = "TLS"
	// FlagReset: an established tunnel was torn down abnormally: stream reset with an error code, HTTP/2
	// connection lost, protocol error, or a local I/O error.
	FlagReset Flag = "RESET"
	// FlagProtocol: the peer broke the HTTP/2 protocol (bad preface, bad frames); the connection is closed.
	FlagProtocol Flag = "PROTOCOL"
	// FlagTimeout: a deadline passed before the tunnel was established (handshake, headers, response).
	FlagTimeout Flag = "TIMEOUT"

	// FlagBadRequest: the method is not CONNECT or the :authority does not parse (400).
	FlagBadRequest Flag = "BAD_REQUEST"
	// FlagWrongTarget: the target is not an address this agent serves on that connection (400).
	FlagWrongTarget Flag = "WRONG_TARGET"
	// FlagHeadersTooLarge: the request's header list is over the limit (431, as ztunnel's HTTP/2 stack answers).
	FlagHeadersTooLarge Flag = "HEADERS_TOO_LARGE"
	// FlagDenied: authorization denied the tunnel (401, never 403).
	FlagDenied Flag = "DENIED"
	// FlagUnknownWorkload: no local workload has the target address (503).
	FlagUnknownWorkload Flag = "UNKNOWN_WORKLOAD"
	// FlagIllegalPort: the target port is 15001, 15006 or 15008 (503).
	FlagIllegalPort Flag = "ILLEGAL_PORT"
	// FlagUnresolvable: a hostname target could not be resolved (503).
	FlagUnresolvable Flag = "UNRESOLVABLE"
	// FlagUpstreamConnect: connecting to the target failed (503).
	FlagUpstreamConnect Flag = "UPSTREAM_CONNECT"
	// FlagUpstreamTimeout: connecting to the target took longer than the connect timeout (503).
	FlagUpstreamTimeout Flag = "UPSTREAM_TIMEOUT"
	// FlagOverloaded: the stream was refused because the connection carries too many (REFUSED_STREAM).
	FlagOverloaded Flag = "OVERLOADED"
	// FlagShutdown: the tunnel was refused or ended because the server or pool is shutting down.
	FlagShutdown Flag = "SHUTDOWN"
	// FlagRevoked: the caller revoked an established tunnel (Request.Relay's Revoker), e.g. after a policy change.
	FlagRevoked Flag = "REVOKED"
	// FlagInternal: the authorize callback returned an unusable decision or panicked (503).
	FlagInternal Flag = "INTERNAL"
)

// Status is the HTTP status a server answers when it refuses a tunnel for this reason, per spec/hbone.md:
// 400 bad request and wrong target, 401 denied, 431 header list too large, 503 everything else.
func (f Flag) Status() int {
	switch f {
	case FlagNone:
		return http.StatusOK
	case FlagBadRequest, FlagWrongTarget:
		return http.StatusBadRequest
	case FlagDenied:
		return http.StatusUnauthorized
	case FlagHeadersTooLarge:
		return http.StatusRequestHeaderFieldsTooLarge
	default:
		return http.StatusServiceUnavailable
	}
}

// String returns the flag's name, or "-" for FlagNone (as access logs print an empty flag).
func (f Flag) String() string {
	if f == FlagNone {
		return "-"
	}
	return string(f)
}
