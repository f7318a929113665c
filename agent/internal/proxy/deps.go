package proxy

import (
	"log/slog"
	"net"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/connlimit"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
)

// Deps are what the proxies share, given by the composition root.
type Deps struct {
	// Snap returns the current mesh snapshot.
	Snap func() *state.Snapshot
	// Dialer connects upstream; it must mark its sockets so that they bypass
	// capture.
	Dialer *net.Dialer
	// Tunnels opens HBONE streams.
	Tunnels TunnelDialer
	// Metrics records connections; Access is the access logger.
	Metrics *telemetry.Metrics
	Access  *slog.Logger
	Log     *slog.Logger
	// Warn rate-limits per-connection warnings.
	Warn *telemetry.Limiter
	// Policy returns the current authorization set (nil: no policy).
	Policy func() *policy.Set
	// Live tracks allowed inbound connections for re-evaluation.
	Live *Live
	// Hairpin returns, under hairpin enforcement (spec/routing.md), the
	// dedicated identity the host presents to a waypoint for the plaintext
	// callers it hairpins, and true; false under policy enforcement, the
	// default (nil: policy).
	Hairpin func() (spiffeid.ID, bool)
	// DefaultWorkload returns the UID of the local workload whose identity
	// connections of unrecognised processes present ("": by source address).
	DefaultWorkload func() string
	// Recognised reports whether the local workload with this UID is
	// recognised by its processes (user, group or unit): its identity is never
	// the fallback of an unrecognised process (nil: none is).
	Recognised func(uid string) bool
	// HostAddrs returns this host's own addresses: the waypoint role never
	// forwards to one of them but for a local workload's (nil: unknown, not
	// checked; the waypoint's own addresses are refused anyway).
	HostAddrs func() []netip.Addr
	// InboundLimit bounds the open connections of the inbound plaintext port
	// per source and in total; OutboundLimit those of the outbound ports, all
	// together. nil: no limit.
	InboundLimit, OutboundLimit *connlimit.Limiter
	// Refused is told of each connection a limit closed (nil: not told).
	Refused func(listener string, remote netip.AddrPort, limit string)
}

// warn logs a per-connection warning, at most once per second per key.
func (d *Deps) warn(key, msg string, args ...any) {
	ok, suppressed := d.Warn.Allow(key)
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	d.Log.Warn(msg, args...)
}

// hairpin is Hairpin, false when it is nil.
func (d *Deps) hairpin() (spiffeid.ID, bool) {
	if d.Hairpin == nil {
		return spiffeid.ID{}, false
	}
	return d.Hairpin()
}
