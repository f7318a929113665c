package hbone

import (
	"net/netip"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Direction says which end of a tunnel this agent is.
type Direction uint8

const (
	// Inbound: we are the HBONE server; the tunnel ends at a local workload.
	Inbound Direction = iota + 1
	// Outbound: we are the HBONE client.
	Outbound
)

func (d Direction) String() string {
	switch d {
	case Inbound:
		return "inbound"
	case Outbound:
		return "outbound"
	}
	return "unknown"
}

// TunnelInfo describes a tunnel to the pool's Telemetry, or a refused one to the server's Handler. It is not modified after it is first handed out.
type TunnelInfo struct {
	Direction Direction
	// Peer is the SPIFFE ID of the other end (zero when the failure came before the TLS handshake finished).
	Peer spiffeid.ID
	// ServerName is the SNI of the TLS handshake, inbound ("" when the client sent none).
	ServerName string
	// Local and Remote are the addresses of the HBONE (TLS) connection.
	Local, Remote netip.AddrPort
	// Authority is the CONNECT :authority as sent or received ("" when none was parsed).
	Authority string
	// Target is where the tunnel leads: inbound, the address the server connected to; outbound, the
	// authority's address when it is one.
	Target netip.AddrPort
	// ForwardedFor is the original client from the forwarded header, when present.
	ForwardedFor netip.AddrPort
	// ForwardedHost is the forwarded header's `host=` inbound (the service the client addressed), "" when absent.
	ForwardedHost string
	Start         time.Time
	// Bytes reports what the tunnel has carried so far, from this end (sent to the peer, received from it):
	// set from TunnelOpened on, for telemetry that counts bytes as they go.
	Bytes func() (sent, received int64)
}

// TunnelStats is what a tunnel carried, reported when it closes. Bytes are counted from this end: Sent went to
// the peer, Received came from it.
type TunnelStats struct {
	BytesSent     int64
	BytesReceived int64
	Duration      time.Duration
	// Flag is FlagNone for a tunnel that ended normally (both sides closed, or a reset with NO_ERROR/CANCEL).
	Flag Flag
	Err  error
}

// Telemetry receives the client pool's tunnel events (the server's handler records its own tunnels).
// Implementations must be fast and safe for concurrent use: they are called from connection goroutines.
// TunnelOpened and TunnelClosed come in pairs; TunnelFailed is for tunnels that were never established (a refused
// CONNECT, a failed dial or handshake) and has no TunnelOpened before it.
type Telemetry interface {
	TunnelOpened(t *TunnelInfo)
	TunnelClosed(t *TunnelInfo, s TunnelStats)
	TunnelFailed(t *TunnelInfo, flag Flag, err error)
}

// NopTelemetry is the default Telemetry: it ignores everything.
type NopTelemetry struct{}

func (NopTelemetry) TunnelOpened(*TunnelInfo)              {}
func (NopTelemetry) TunnelClosed(*TunnelInfo, TunnelStats) {}
func (NopTelemetry) TunnelFailed(*TunnelInfo, Flag, error) {}
