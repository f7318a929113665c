package state

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// NetworkGateway is how workloads of a network are reached from another network: its east-west gateway
// (spec/routing.md, "Multi-network"), taking double HBONE on Addresses and presenting Identity.
type NetworkGateway struct {
	Network   string       `json:"network"`
	Addresses []netip.Addr `json:"addresses"`
	// Identity is the SPIFFE ID the gateway presents.
	Identity string `json:"identity"`
	// Port is the gateway's HBONE port; 0 is the mesh's (15008).
	Port uint16 `json:"port,omitempty"`
	// Node is the node that declared it ("" for istiod's).
	Node   string `json:"node,omitempty"`
	Origin Origin `json:"origin"`
}

// ID is the gateway's identity.
func (g *NetworkGateway) ID() (spiffeid.ID, error) {
	id, err := spiffeid.FromString(g.Identity)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("gateway of network %s: identity %q: %w", g.Network, g.Identity, err)
	}
	return id, nil
}

// indexGateways keeps, per network, the gateways of the strongest origin that declares one, in node order.
func (s *Snapshot) indexGateways(gws []*NetworkGateway) {
	s.gateways = map[string][]*NetworkGateway{}
	sorted := slices.Clone(gws)
	slices.SortStableFunc(sorted, func(a, b *NetworkGateway) int {
		return cmp.Or(cmp.Compare(a.Network, b.Network), cmp.Compare(claimRank(false, a.Origin, false), claimRank(false, b.Origin, false)), cmp.Compare(a.Node, b.Node))
	})
	for _, g := range sorted {
		if g.Network == "" || len(g.Addresses) == 0 {
			continue
		}
		if _, err := g.ID(); err != nil {
			continue
		}
		have := s.gateways[g.Network]
		if len(have) > 0 && claimRank(false, have[0].Origin, false) != claimRank(false, g.Origin, false) {
			continue // a weaker origin does not add to a stronger one's gateways
		}
		s.gateways[g.Network] = append(have, g)
		for _, a := range g.Addresses {
			if _, taken := s.gatewayAddrs[a.Unmap()]; !taken {
				if s.gatewayAddrs == nil {
					s.gatewayAddrs = map[netip.Addr]*NetworkGateway{}
				}
				s.gatewayAddrs[a.Unmap()] = g
			}
		}
	}
}

// GatewayAt is the gateway in use at address a, if any.
func (s *Snapshot) GatewayAt(a netip.Addr) (*NetworkGateway, bool) {
	g, ok := s.gatewayAddrs[a.Unmap()]
	return g, ok
}

// Gateways are the gateways in use, by network.
func (s *Snapshot) Gateways() []*NetworkGateway {
	var out []*NetworkGateway
	for _, n := range slices.Sorted(maps.Keys(s.gateways)) {
		out = append(out, s.gateways[n]...)
	}
	return out
}

// GatewaysOf are the gateways of network, the preferred first; none when the network has none known.
func (s *Snapshot) GatewaysOf(network string) []*NetworkGateway { return s.gateways[network] }
