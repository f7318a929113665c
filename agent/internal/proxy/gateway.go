package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/ports"
)

// GatewayRole is the agent as the east-west gateway of its network (spec/routing.md, "Multi-network"): on its
// addresses it takes the outer tunnels of double HBONE, each naming a service by "hostname:port", and relays the
// tunnel's bytes untouched to the HBONE port of one of that service's endpoints on its network. What it relays is
// the client's inner TLS session with the destination's node: the gateway sees no plaintext, and the destination
// authorizes the client's own identity. It reaches nothing else: no address targets, no endpoint on another
// network, no plaintext workload, none of the addresses a waypoint may never reach, not itself.
type GatewayRole struct {
	// Addresses are where the gateway takes tunnels (its HBONE port on each); Identity is what it presents there.
	Addresses []netip.Addr
	Identity  spiffeid.ID
	// Network is the network it serves: endpoints on it are the only ones it forwards to.
	Network string
}

// serves reports whether a is one of the gateway's addresses.
func (g *GatewayRole) serves(a netip.Addr) bool {
	return g != nil && slices.Contains(g.Addresses, a.Unmap())
}

// serveGateway runs one outer tunnel of double HBONE: find the service, pick an endpoint on this network, connect
// to its HBONE port, answer, relay, record.
func (h *InboundHBONE) serveGateway(r *hbone.Request, snap *state.Snapshot) {
	t := &inboundTunnel{route: "gateway"}
	svc, up, flag, err := h.gatewayUpstream(r, snap, t)
	if err != nil {
		h.refuse(r, snap, t, flag, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), ConnectTimeout)
	conn, err := h.d.Dialer.DialContext(ctx, "tcp", up.String()) // marked: bypasses capture; from this host
	cancel()
	if err != nil {
		h.failed(r, snap, t, r.RefuseDial(up, fmt.Errorf("endpoint of %s: %w", svc.Hostname, err)))
		return
	}
	handedOff := false
	defer func() {
		if !handedOff {
			conn.Close()
		}
	}()
	handedOff = h.relay(r, snap, t, conn, hbone.Baggage{}, nil, func() {})
}

// gatewayUpstream is the HBONE address of the endpoint a gateway tunnel goes to, chosen as a ztunnel would among
// the service's endpoints on the gateway's network that it may reach.
func (h *InboundHBONE) gatewayUpstream(r *hbone.Request, snap *state.Snapshot, t *inboundTunnel) (*state.Service, netip.AddrPort, hbone.Flag, error) {
	g := h.d.Gateway
	if !r.Target.IsHostname() {
		return nil, netip.AddrPort{}, hbone.FlagBadRequest, fmt.Errorf("gateway: %s is an address; a gateway forwards to services by hostname only", r.Target)
	}
	if r.Header(forwardedNetworkHeader) != "" {
		// Only the inner CONNECT carries the client's network: this is a tunnel through another gateway, or a
		// confused client. Never forwarded, so that gateways cannot be chained into a loop.
		return nil, netip.AddrPort{}, hbone.FlagBadRequest, errors.New("gateway: an outer tunnel with x-forwarded-network")
	}
	svc, ok := snap.ServiceByHostname(r.Target.Host)
	if !ok {
		return nil, netip.AddrPort{}, hbone.FlagWrongTarget, fmt.Errorf("gateway: no service %s", r.Target.Host)
	}
	t.svc = svc
	if !svc.HasPort(r.Target.Port) {
		return svc, netip.AddrPort{}, hbone.FlagUnknownWorkload, fmt.Errorf("gateway: service %s has no port %d", svc.Hostname, r.Target.Port)
	}
	var allowed []*state.Endpoint
	var refused error
	for _, e := range svc.Endpoints {
		up, err := h.gatewayEndpoint(snap, e.Workload, r.LocalAddr.Addr())
		if err != nil {
			if refused == nil && e.Workload != nil && e.Workload.Network == g.Network {
				refused = fmt.Errorf("gateway: endpoint %s of service %s %w", up.Addr(), svc.Hostname, err)
			}
			continue
		}
		allowed = append(allowed, e)
	}
	part := *svc
	part.Endpoints = allowed
	e, _, ok := state.PickEndpoint(&part, r.Target.Port, nil, nil)
	if !ok {
		if refused != nil {
			return svc, netip.AddrPort{}, hbone.FlagUnknownWorkload, refused
		}
		return svc, netip.AddrPort{}, hbone.FlagUnknownWorkload, fmt.Errorf("gateway: service %s has no healthy endpoint for port %d on network %q", svc.Hostname, r.Target.Port, g.Network)
	}
	up, _ := h.gatewayEndpoint(snap, e.Workload, r.LocalAddr.Addr())
	t.dst, t.target = e.Workload, up
	return svc, up, hbone.FlagNone, nil
}

// gatewayEndpoint is the HBONE address the gateway reaches workload w at, or why it may not: w must be a
// captured workload on the gateway's network, at an address that may be a remote workload's, not the gateway's
// own nor this host's unless w runs here. The address of the family the tunnel arrived in comes first.
func (h *InboundHBONE) gatewayEndpoint(snap *state.Snapshot, w *state.Workload, arrived netip.Addr) (netip.AddrPort, error) {
	g := h.d.Gateway
	switch {
	case w == nil:
		return netip.AddrPort{}, errors.New("is unknown")
	case w.Network != g.Network:
		return netip.AddrPort{}, fmt.Errorf("is on network %q, not this gateway's", w.Network)
	case w.Tunnel != state.TunnelHBONE:
		return netip.AddrPort{}, errors.New("is not a captured workload (plaintext refused)")
	}
	up := netip.AddrPortFrom(sameFamily(w.Addresses, arrived), ports.HBONE)
	a := up.Addr().Unmap()
	if what := unreachable(a); what != "" {
		return up, fmt.Errorf("is %s", what)
	}
	if g.serves(a) {
		return up, errors.New("is an address of this gateway")
	}
	if other, ok := snap.GatewayAt(a); ok {
		// A tunnel relayed to another gateway would be relayed on: gateways never forward to one another.
		return up, fmt.Errorf("is an address of network %s's gateway", other.Network)
	}
	if wp, ok := snap.WaypointByAddr(a); ok && wp.Local {
		return up, fmt.Errorf("is an address of waypoint %s on this host", wp.Key())
	}
	if !w.Local && h.d.hostAddr(a) {
		return up, fmt.Errorf("is an address of this host, and workload %s does not run here", w.UID)
	}
	return up, nil
}
