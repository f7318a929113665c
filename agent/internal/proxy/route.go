package proxy

import (
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// RouteKind is what the outbound proxy does with a captured connection.
type RouteKind int

// Route kinds, in the order of spec/routing.md's outbound decision.
const (
	RouteDrop        RouteKind = iota // never forwarded (loop, or no identity for HBONE)
	RouteHBONE                        // HBONE to Gateway with :authority Target
	RoutePlain                        // plaintext to a known non-HBONE workload
	RoutePassthrough                  // unknown destination: as if not captured
)

func (k RouteKind) String() string {
	switch k {
	case RouteDrop:
		return "drop"
	case RouteHBONE:
		return "hbone"
	case RoutePlain:
		return "plaintext"
	case RoutePassthrough:
		return "passthrough"
	}
	return "unknown"
}

// Route is the outbound decision for one connection.
type Route struct {
	Kind     RouteKind
	Target   netip.AddrPort  // where the bytes are for (the :authority for HBONE)
	Gateway  netip.AddrPort  // the HBONE peer (ip:15008), for RouteHBONE
	Expected []spiffeid.ID   // identities the HBONE peer may present
	Source   spiffeid.ID     // the local identity to present, for RouteHBONE
	Dest     *state.Workload // the destination workload, when known
	Reason   string          // why, for drops and logs
}

// HBONEPort is where peers accept HBONE.
const HBONEPort = 15008

// DecideOutbound routes a captured connection from src to its original
// destination dst, per spec/routing.md (services and waypoints come later).
func DecideOutbound(snap *state.Snapshot, src, dst netip.AddrPort) Route {
	dstIP := dst.Addr().Unmap()
	dst = netip.AddrPortFrom(dstIP, dst.Port())
	if dstIP.IsLoopback() && IllegalPort(dst.Port()) {
		return Route{Kind: RouteDrop, Target: dst, Reason: "loopback destination on an agent port"}
	}
	w, known := snap.WorkloadByAddr(dstIP)
	if !known {
		return Route{Kind: RoutePassthrough, Target: dst}
	}
	if w.Tunnel != state.TunnelHBONE {
		return Route{Kind: RoutePlain, Target: dst, Dest: w}
	}
	source, ok := sourceIdentity(snap, src.Addr())
	if !ok {
		return Route{Kind: RouteDrop, Target: dst, Dest: w, Reason: "no local workload identity for an HBONE destination"}
	}
	expected, err := w.Identity()
	if err != nil {
		return Route{Kind: RouteDrop, Target: dst, Dest: w, Reason: "destination has no valid identity: " + err.Error()}
	}
	return Route{
		Kind:     RouteHBONE,
		Target:   dst,
		Gateway:  netip.AddrPortFrom(dstIP, HBONEPort),
		Expected: []spiffeid.ID{expected},
		Source:   source,
		Dest:     w,
	}
}

// sourceIdentity is the identity a connection from src presents: that of the
// local workload owning src, else that of the host's first local workload.
func sourceIdentity(snap *state.Snapshot, src netip.Addr) (spiffeid.ID, bool) {
	w, ok := snap.LocalByAddr(src)
	if !ok {
		if w = firstLocal(snap); w == nil {
			return spiffeid.ID{}, false
		}
	}
	id, err := w.Identity()
	return id, err == nil
}

func firstLocal(snap *state.Snapshot) *state.Workload {
	if local := snap.Local(); len(local) > 0 {
		return local[0]
	}
	return nil
}
