package discovery

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Replies to record requests: how many may wait, and how many are sent at once (a reply to an unreachable node
// blocks for memberlist's TCP timeout).
const (
	replyQueue   = 256
	replyWorkers = 4
)

// maintainLoop expires the records of nodes gone for longer than the grace period and asks nodes for their
// advertised records when gossip has not delivered them.
func (d *Discovery) maintainLoop(ctx context.Context, ml *memberlist.Memberlist) {
	delay := d.tuning.RepairDelay
	tick := time.NewTicker(max(delay/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		d.mu.Lock()
		gen := d.table.gen
		gone := d.table.expire(now)
		want := d.table.wanted(now, delay, 2*delay)
		changed := gen != d.table.gen
		d.numAlive.Store(int64(d.table.alive()))
		d.mu.Unlock()
		if len(gone) > 0 {
			d.log.Info("gossip: dropped the records of nodes down for longer than the grace period", "nodes", gone)
		}
		if changed {
			d.notify()
		}
		if len(want) > 0 {
			d.request(ml, want)
		}
	}
}

// request asks nodes for their records (best effort: a lost request is repeated).
func (d *Discovery) request(ml *memberlist.Memberlist, names []string) {
	msg := encodeRequest(d.name)
	for _, n := range members(ml, names) {
		if err := ml.SendBestEffort(n, msg); err != nil {
			d.log.Debug("gossip: asking for a record", "node", n.Name, "err", err)
		}
	}
}

// queueReply schedules sending this node's record to an alive member that asked for it.
func (d *Discovery) queueReply(from string) {
	d.mu.Lock()
	p := d.table.peers[from]
	if p == nil || p.status != statusAlive {
		d.mu.Unlock()
		d.dropped(drop(reasonNotMember, "a request from %q", from), from, "request")
		return
	}
	if d.local == nil || d.replying[from] {
		d.mu.Unlock()
		return
	}
	d.replying[from] = true
	d.mu.Unlock()
	select {
	case d.replies <- from:
	default: // full: the requester asks again
		d.mu.Lock()
		delete(d.replying, from)
		d.mu.Unlock()
	}
}

// replyLoop sends this node's record to the members that asked for it, a few at a time.
func (d *Discovery) replyLoop(ctx context.Context, ml *memberlist.Memberlist) {
	var wg sync.WaitGroup
	for range replyWorkers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case name := <-d.replies:
					d.reply(ml, name)
				}
			}
		})
	}
	wg.Wait()
}

func (d *Discovery) reply(ml *memberlist.Memberlist, name string) {
	d.mu.Lock()
	delete(d.replying, name)
	var raw []byte
	if d.local != nil {
		raw = d.local.raw
	}
	d.mu.Unlock()
	nodes := members(ml, []string{name})
	if raw == nil || len(nodes) == 0 {
		return
	}
	if err := ml.SendReliable(nodes[0], encodeMessage(kindReply, raw)); err != nil {
		d.log.Debug("gossip: sending this node's record", "to", name, "err", err)
	}
}

// members returns memberlist's alive nodes with the given names.
func members(ml *memberlist.Memberlist, names []string) []*memberlist.Node {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	var out []*memberlist.Node
	for _, n := range ml.Members() {
		if want[n.Name] {
			out = append(out, n)
		}
	}
	return out
}
