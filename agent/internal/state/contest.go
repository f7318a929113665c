package state

import (
	"net/netip"
	"slices"
	"strings"
)

// How a contest over an address is settled (docs/gossip.md, "Trust"). Names
// never decide: not a node name, not a UID, not a sort order a publisher can
// pick.
//
//  1. A gossip claim of plaintext (tunnel NONE) never takes an address that
//     another claimant, or a waypoint, is reached on over HBONE: no downgrade.
//  2. The strongest origin wins: this host's own workloads, then its
//     configuration, then istiod, then gossip with the address in the
//     publisher's certificate (IP SANs), then gossip signed by the identity.
//  3. Among trusted claims (configuration, istiod) of one rank, the one that
//     held the address in the previous snapshot, else the first by UID: these
//     are the operator's own words, and every agent agrees on them.
//  4. Among gossip claims of one rank, the established owner (it held the
//     address in the previous snapshot and still claims it) keeps it. Claims
//     that agree (workloads of one node sharing the address by port) are one
//     owner. Two owners and none established: the address goes to no one.
//
// The reasons a claim lost, as reported in conflicts and metrics.
const (
	ContestDowngrade   = "plaintext_claim_on_hbone_address"
	ContestOutranked   = "outranked" // a stronger origin or a proof holds the address
	ContestEstablished = "established_owner"
	ContestUnresolved  = "contested"             // no claim could be preferred: routed to no one
	ContestVIP         = "address_is_a_vip"      // a service VIP of a stronger source, or in the operator's VIP ranges
	ContestUID         = "uid_of_another_source" // a UID a stronger source names (a peer named as a static workload's node)
	ContestUnproven    = "address_not_proven"    // [gossip] require_address_proof, and no IP SAN names it
)

// loss is one claimant that did not get the address, and why.
type loss struct {
	w      *Workload
	reason string
}

// contestAddress returns the workload that holds a (nil: no one) and the
// claimants that lost, in UID order. Claimants sharing the address with the
// winner are neither.
func contestAddress(a netip.Addr, claimants []*Workload, prev *Snapshot, waypoint bool) (*Workload, []loss) {
	if len(claimants) == 1 && !waypoint {
		return claimants[0], nil
	}
	var losers []loss
	candidates := claimants
	if waypoint || anyHBONE(claimants) {
		candidates = nil
		for _, w := range claimants {
			if w.Tunnel != TunnelHBONE && !w.Origin.Trusted() && !w.Local {
				losers = append(losers, loss{w, ContestDowngrade})
				continue
			}
			candidates = append(candidates, w)
		}
	}
	if len(candidates) == 0 {
		return nil, losers
	}
	best := rankUnsigned
	for _, w := range candidates {
		best = min(best, w.rank())
	}
	var top []*Workload
	for _, w := range candidates {
		if w.rank() == best {
			top = append(top, w)
		}
	}
	winner := pickOwner(a, top, prev, best <= rankIstiod)
	for _, w := range candidates {
		switch {
		case winner != nil && (w == winner || sharing(winner, w)):
		case w.rank() > best:
			losers = append(losers, loss{w, ContestOutranked})
		case winner != nil:
			losers = append(losers, loss{w, ContestEstablished})
		default:
			losers = append(losers, loss{w, ContestUnresolved})
		}
	}
	return winner, sortLosses(losers)
}

// pickOwner chooses among claims of one rank: the only owner, else the
// established one, else (trusted claims only) the first.
func pickOwner(a netip.Addr, top []*Workload, prev *Snapshot, trusted bool) *Workload {
	if oneOwner(top) {
		return top[0]
	}
	for _, w := range top {
		if prev.held(a, w.UID) {
			return w
		}
	}
	if trusted {
		return top[0]
	}
	return nil
}

// oneOwner reports whether the claims agree: one workload, or workloads of
// one node that share the address by port.
func oneOwner(ws []*Workload) bool {
	for _, w := range ws[1:] {
		if !sharing(ws[0], w) {
			return false
		}
	}
	return true
}

func anyHBONE(ws []*Workload) bool {
	for _, w := range ws {
		if w.Tunnel == TunnelHBONE {
			return true
		}
	}
	return false
}

// held reports whether the workload uid held address a in snapshot s (nil:
// no one held anything).
func (s *Snapshot) held(a netip.Addr, uid string) bool {
	if s == nil {
		return false
	}
	if w, ok := s.byAddr[a]; ok && w.UID == uid {
		return true
	}
	w, ok := s.byUID[uid]
	if !ok {
		return false
	}
	for _, p := range w.Ports {
		if h, ok := s.byAddrPort[netip.AddrPortFrom(a, p)]; ok && h.UID == uid {
			return true
		}
	}
	return false
}

// sortLosses keeps losers in UID order, as the claimants came.
func sortLosses(ls []loss) []loss {
	slices.SortStableFunc(ls, func(a, b loss) int { return strings.Compare(a.w.UID, b.w.UID) })
	return ls
}
