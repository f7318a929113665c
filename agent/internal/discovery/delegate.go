package discovery

import (
	"github.com/hashicorp/memberlist"
)

// delegate adapts memberlist's callbacks to Discovery, keeping them off its exported API. memberlist calls the
// event methods with its node lock held: they only update the table, never call back into memberlist.
type delegate struct{ d *Discovery }

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
)

// NodeMeta advertises the version, size and digest of this node's record.
func (g *delegate) NodeMeta(limit int) []byte {
	d := g.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.local == nil {
		return nil
	}
	meta := encodeMeta(d.local.advert)
	if len(meta) > limit {
		return nil // cannot happen: the metadata is a few dozen bytes
	}
	return meta
}

// NotifyMsg receives a record (broadcast, relayed or a reply) or a request. The buffer is memberlist's: copy
// what is kept.
func (g *delegate) NotifyMsg(b []byte) { g.d.receive(b) }

// GetBroadcasts hands memberlist the records waiting to be gossiped: this node's and those relayed.
func (g *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return g.d.queue.GetBroadcasts(overhead, limit)
}

// LocalState is this node's side of a push/pull: its own record, and on a join every record it holds.
func (g *delegate) LocalState(join bool) []byte { return g.d.localState(join) }

// MergeRemoteState takes the other side's records; memberlist has merged its membership just before.
func (g *delegate) MergeRemoteState(b []byte, join bool) { g.d.mergeState(b) }

func (g *delegate) NotifyJoin(n *memberlist.Node)   { g.d.memberUp(n) }
func (g *delegate) NotifyUpdate(n *memberlist.Node) { g.d.memberUp(n) }
func (g *delegate) NotifyLeave(n *memberlist.Node)  { g.d.memberDown(n) }

// NotifyConflict reports two nodes using one name: their records would replace each other.
func (g *delegate) NotifyConflict(existing, other *memberlist.Node) {
	g.d.warn.logf(warnLevel, "conflict:"+existing.Name, "gossip: two nodes use one name; node names must be unique",
		"node", existing.Name, "address", existing.Address(), "other", other.Address())
}
