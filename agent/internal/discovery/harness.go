//go:build scaleharness

package discovery

import (
	"net/netip"

	"github.com/hashicorp/memberlist"
)

// Deliver hands this node another node's new record the way memberlist does when that node publishes it: the
// update of its advertisement (NotifyUpdate), then the record as a gossip broadcast (NotifyMsg). It exists only
// in builds with the scaleharness tag, for the scale harness (make bench-scale), which measures the update path
// without sockets. The record is unsigned: the node must accept unsigned records (Trust.AcceptUnsigned).
func (d *Discovery) Deliver(r Record, addr netip.AddrPort) error {
	rec := normalize(r)
	rec.Address = addr
	if err := validateRecord(rec); err != nil {
		return err
	}
	raw := encodeRecord(rec)
	d.memberUp(&memberlist.Node{Name: rec.Node, Addr: addr.Addr().AsSlice(), Port: addr.Port(),
		Meta: encodeMeta(advertOf(raw, rec.Version)), State: memberlist.StateAlive})
	d.receive(encodeMessage(kindBroadcast, raw))
	return nil
}
