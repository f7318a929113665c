package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/connlimit"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/routes"
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
	// Routes returns the routes attached to services, which the waypoint applies at L7 (nil: none).
	Routes func() *routes.Set
	// Live tracks allowed inbound connections for re-evaluation.
	Live *Live
	// Resolve looks a hostname up with the host's own resolvers, never the
	// agent's DNS proxy (which answers a mesh hostname with its VIP); nil:
	// workloads known by hostname cannot be reached.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// SourceMark, when not 0, has the agent connect to local applications from the client's address (the
	// HBONE peer's, or a plaintext client's own), so that they see the real client: it is the SO_MARK of those
	// transparent sockets, the capture mark with ports.ReturnMark, whose replies capture.ReturnPath routes
	// back. 0: from this host.
	SourceMark uint32
	// SourceIPv6 lets SourceMark apply to IPv6 clients too: the host's IPv6 return path is in place
	// (capture.IPv6Usable). Without it IPv6 clients reach applications from this host.
	SourceIPv6 bool
	// Recognised are the UIDs of the local workloads recognised by their
	// processes (user, group or unit): their identity is never the fallback of
	// an unrecognised process. Fixed until a restart (nil: none).
	Recognised map[string]bool
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
	// Gateway is this agent's east-west gateway role (gateway.go); nil: none.
	Gateway *GatewayRole

	settings atomic.Pointer[Settings]

	localOnce sync.Once
	localDial *localDialers
}

// Settings are what a reload changes in the data path: a value, swapped whole
// (Apply), never a callback into the composition root.
type Settings struct {
	// Hairpin is hairpin enforcement (spec/routing.md); false is policy
	// enforcement, the default. HairpinIdentity is the dedicated identity the
	// host presents to a waypoint for the plaintext callers it hairpins (zero:
	// none is configured, and those callers are refused).
	Hairpin         bool
	HairpinIdentity spiffeid.ID
	// DefaultWorkload is the UID of the local workload whose identity
	// connections of unrecognised processes present ("": by source address).
	DefaultWorkload string
}

// Apply puts s in place for the connections accepted from now on.
func (d *Deps) Apply(s Settings) { d.settings.Store(&s) }

// current is the settings in place (zero until the first Apply).
func (d *Deps) current() *Settings {
	if s := d.settings.Load(); s != nil {
		return s
	}
	return &Settings{}
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

// hairpin is the hairpin identity and whether hairpin enforcement is on.
func (d *Deps) hairpin() (spiffeid.ID, bool) {
	s := d.current()
	return s.HairpinIdentity, s.Hairpin
}

// resolve finds the address to reach host at (spec/routing.md, endpoint
// selection): a random answer of the caller's family first, else of the
// other. Answers that are never a remote workload's (this host's own
// addresses, loopback, link-local and the cloud's metadata address,
// multicast, unspecified: unreachable) are never used: a DNS answer, which
// anyone on the path may forge, must not point the agent at itself.
func (d *Deps) resolve(ctx context.Context, host string, v4 bool) (netip.Addr, error) {
	if d.Resolve == nil {
		return netip.Addr{}, fmt.Errorf("%s is known by hostname only and this agent resolves none", host)
	}
	addrs, err := d.Resolve(ctx, host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolve %s: %w", host, err)
	}
	var same, other []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case unreachable(a) != "" || d.hostAddr(a): // never this host, the agent, or the cloud's metadata
		case a.Is4() == v4:
			same = append(same, a)
		default:
			other = append(other, a)
		}
	}
	for _, set := range [][]netip.Addr{same, other} {
		if len(set) > 0 {
			return set[rand.IntN(len(set))], nil
		}
	}
	return netip.Addr{}, fmt.Errorf("resolve %s: no usable address in %v", host, addrs)
}

// hostAddr reports whether a is one of this host's addresses; false when the
// host's addresses are unknown (HostAddrs is nil).
func (d *Deps) hostAddr(a netip.Addr) bool {
	if d.HostAddrs == nil {
		return false
	}
	return slices.ContainsFunc(d.HostAddrs(), func(b netip.Addr) bool { return b.Unmap() == a })
}
