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
func (d *Discovery) request(ml *memberlist.Memberlist, targets []target) {
	msg := encodeRequest(request{from: d.name, addr: d.LocalAddr()})
	for _, t := range targets {
		d.stats.requested.Add(1)
		if err := ml.SendBestEffort(t.node(), msg); err != nil {
			d.log.Debug("gossip: asking for a record", "node", t.name, "err", err)
		}
	}
}

// queueReply schedules sending this node's record to a node that asked for it. Only members (holders of the
// key) can ask; one that is not alive in this node's view yet (views differ while nodes join) is answered at the
// address it gave.
func (d *Discovery) queueReply(r request) {
	d.mu.Lock()
	if p := d.table.peers[r.from]; p != nil && p.status == statusAlive {
		r.addr = p.addr
	}
	if d.local == nil || d.replying[r.from] || !r.addr.IsValid() || r.from == d.name {
		d.mu.Unlock()
		return
	}
	d.replying[r.from] = true
	d.mu.Unlock()
	select {
	case d.replies <- r:
	default: // full: the requester asks again
		d.mu.Lock()
		delete(d.replying, r.from)
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
				case r := <-d.replies:
					d.reply(ml, r)
				}
			}
		})
	}
	wg.Wait()
}

func (d *Discovery) reply(ml *memberlist.Memberlist, r request) {
	d.mu.Lock()
	delete(d.replying, r.from)
	var raw []byte
	if d.local != nil {
		raw = d.local.raw
	}
	d.mu.Unlock()
	if raw == nil {
		return
	}
	d.stats.replied.Add(1)
	if err := ml.SendReliable(target{r.from, r.addr}.node(), encodeMessage(kindReply, raw)); err != nil {
		d.log.Debug("gossip: sending this node's record", "to", r.from, "address", r.addr, "err", err)
	}
}

func (t target) node() *memberlist.Node {
	return &memberlist.Node{Name: t.name, Addr: t.addr.Addr().AsSlice(), Port: t.addr.Port()}
}
