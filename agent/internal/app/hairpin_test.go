package app

import (
	"testing"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

// The identity the data path presents for hairpinned callers: none under
// policy; the configured one under hairpin; under hairpin without one, on
// with a zero identity, which the data path refuses rather than present
// anyone else's.
func TestHairpinIdentity(t *testing.T) {
	cfg := &config.Config{Node: config.Node{TrustDomain: "cluster.local"}}
	cfg.Policy.WaypointEnforcement = config.EnforcePolicy
	if _, on := hairpinIdentity(cfg); on {
		t.Error("policy enforcement: hairpin on")
	}
	cfg.Policy.WaypointEnforcement = config.EnforceHairpin
	if id, on := hairpinIdentity(cfg); !on || !id.IsZero() {
		t.Errorf("hairpin without an identity: %v %v, want on with none", id, on)
	}
	cfg.Policy.Hairpin = &config.HairpinIdentity{Namespace: "mesh", ServiceAccount: "hairpin-vm-1"}
	if id, on := hairpinIdentity(cfg); !on || id.String() != "spiffe://cluster.local/ns/mesh/sa/hairpin-vm-1" {
		t.Errorf("hairpin: %v %v", id, on)
	}
	ids, err := localIdentities(cfg)
	if err != nil || len(ids) != 1 || ids[0].String() != "spiffe://cluster.local/ns/mesh/sa/hairpin-vm-1" {
		t.Errorf("held identities %v %v, want the hairpin identity", ids, err)
	}
}
