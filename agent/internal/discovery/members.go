package discovery

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Member is one node of the pool as this node sees it, for /config_dump and status.
type Member struct {
	Name    string         `json:"name"`
	Address netip.AddrPort `json:"address"`
	// State is "self", "alive", "suspect" (alive, but failing probes) or "down" (left or failed; its record is
	// used until the grace period ends).
	State string    `json:"state"`
	Since time.Time `json:"since,omitzero"`
	// RecordVersion is the version of the record in use (0: none yet); Advertised the one the node advertises.
	RecordVersion uint64 `json:"recordVersion"`
	Advertised    uint64 `json:"advertisedVersion"`
	Workloads     int    `json:"workloads"`
	AgentVersion  string `json:"agentVersion,omitempty"`
}

// Alive counts the members alive (or suspect) in this node's view, itself included, without listing them.
func (d *Discovery) Alive() int { return int(d.numAlive.Load()) }

// Members returns this node and the others it knows, ordered by name.
func (d *Discovery) Members() []Member {
	suspect := map[string]bool{}
	if ml := d.ml.Load(); ml != nil {
		for _, n := range ml.Members() {
			if n.State == memberlist.StateSuspect {
				suspect[n.Name] = true
			}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	self := Member{Name: d.name, Address: d.LocalAddr(), State: "self"}
	if d.local != nil {
		self.RecordVersion, self.Advertised = d.local.rec.Version, d.local.rec.Version
		self.Workloads, self.AgentVersion = len(d.local.rec.Workloads), d.local.rec.AgentVersion
	}
	out := []Member{self}
	for _, p := range d.table.peers {
		m := Member{Name: p.name, Address: p.addr, State: p.status.String(), Since: p.since}
		if p.status == statusAlive && suspect[p.name] {
			m.State = "suspect"
		}
		if p.hasAdvert {
			m.Advertised = p.advertised.version
		}
		if h := p.current; h != nil {
			m.RecordVersion, m.Workloads, m.AgentVersion = h.rec.Version, len(h.rec.Workloads), h.rec.AgentVersion
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Stats counts what this node did with records since it started.
type Stats struct {
	Accepted  uint64 `json:"accepted"`  // records of other nodes taken into use
	Relayed   uint64 `json:"relayed"`   // records passed on by gossip
	Requested uint64 `json:"requested"` // requests sent because gossip had not delivered advertised records
	Replied   uint64 `json:"replied"`   // requests answered
	// Dropped counts input not used, by reason (malformed, too_large, incompatible_version, invalid,
	// digest_mismatch, stale, unknown_node, self).
	Dropped map[string]uint64 `json:"dropped,omitempty"`
}

// Stats returns the counters.
func (d *Discovery) Stats() Stats {
	s := Stats{
		Accepted:  d.stats.accepted.Load(),
		Relayed:   d.stats.relayed.Load(),
		Requested: d.stats.requested.Load(),
		Replied:   d.stats.replied.Load(),
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s.Dropped = maps.Clone(d.drops)
	return s
}
