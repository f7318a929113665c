package state

// Origin says where a claim (a workload, a service declaration, a waypoint
// instance) was learned. It ranks claims in a contest: the host's own
// configuration and istiod always outrank gossip, and a gossip claim counts
// only as far as its publisher proved it (docs/gossip.md, "Trust").
type Origin string

// Origins, from the most to the least trusted.
const (
	// OriginConfig is this host's configuration: its own workloads, services
	// and waypoint, and the [[remote_workload]] it declares.
	OriginConfig Origin = "config"
	// OriginIstiod is what istiod sends over xDS.
	OriginIstiod Origin = "istiod"
	// OriginGossip is a peer's record whose claims were verified: each one is
	// signed by the key of the identity it describes.
	OriginGossip Origin = "gossip"
	// OriginUnsigned is a peer's record accepted without proofs while a mesh
	// upgrades from agents that sign nothing ([gossip] accept_unsigned). It
	// counts as an unproven gossip claim.
	OriginUnsigned Origin = "gossip-unsigned"
)

// Trusted reports whether claims of this origin are taken as they are: the
// host's configuration and istiod. A contest among trusted claims is settled
// by a stable order; among others only proof or an established owner settles it.
func (o Origin) Trusted() bool { return o == OriginConfig || o == OriginIstiod }

// Claim ranks, the smaller the stronger.
const (
	rankLocal = iota
	rankConfig
	rankIstiod
	rankProven   // gossip, with its addresses in its certificate's IP SANs
	rankGossip   // gossip, signed by its identity (or unsigned, during an upgrade)
	rankUnsigned // an origin nobody set
)

// rank is how strongly w claims its addresses.
func (w *Workload) rank() int { return claimRank(w.Local, w.Origin, w.AddressProven) }

// claimRank ranks a claim by where it comes from and whether its publisher's
// certificate names its addresses.
func claimRank(local bool, o Origin, proven bool) int {
	switch {
	case local:
		return rankLocal
	case o == OriginConfig:
		return rankConfig
	case o == OriginIstiod:
		return rankIstiod
	case o == OriginGossip && proven:
		return rankProven
	case o == OriginGossip, o == OriginUnsigned:
		// An unsigned record (a rolling upgrade) counts as an unproven one:
		// between the two only an established owner decides.
		return rankGossip
	}
	return rankUnsigned
}
