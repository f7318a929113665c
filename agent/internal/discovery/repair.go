package discovery

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Repair limits. Asking each node for its own record is right when a few are missing; when many are (this node
// has just joined or healed, or gossip lags behind a burst of joins) one request to one member, naming them all,
// costs one reply, where a request per record would have every node answering every other at once.
const (
	maxRequests  = 4   // records asked for from their nodes per round; more missing: one request to one member
	replyQueue   = 256 // requests waiting for a reply
	replyWorkers = 4   // replies sent at once (one to an unreachable node blocks for memberlist's TCP timeout)
	replyRate    = 50  // replies per second at most, whatever the number of requesters
)

// maintainLoop expires the records of nodes gone for longer than the grace period and asks for the advertised
// records that gossip has not delivered.
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
		unsigned := d.table.expireProofs(now)
		d.assembling.expire(now)
		want := d.table.wanted(now, delay, 2*delay)
		var peer target
		if len(want) > maxRequests {
			peer = d.table.randomAlive()
		}
		changed := gen != d.table.gen
		d.numAlive.Store(int64(d.table.alive()))
		d.mu.Unlock()
		if len(gone) > 0 {
			d.log.Info("gossip: dropped the records of nodes down for longer than the grace period", "nodes", gone)
		}
		if len(unsigned) > 0 {
			d.log.Warn("gossip: dropped records whose signatures expired; their nodes stopped signing them", "nodes", unsigned)
		}
		d.resignIfDue(now)
		if changed {
			d.notify()
		}
		if len(want) > maxRequests {
			d.requestMany(ml, peer, want)
		} else if len(want) > 0 {
			d.request(ml, want)
		}
	}
}

// requestMany asks one member for many records at once.
func (d *Discovery) requestMany(ml *memberlist.Memberlist, peer target, want []target) {
	if !peer.addr.IsValid() {
		return
	}
	r := request{from: d.name, addr: d.LocalAddr()}
	for _, w := range want[:min(len(want), maxWant)] {
		r.want = append(r.want, w.name)
	}
	d.stats.requested.Add(1)
	if err := ml.SendBestEffort(peer.node(), encodeRequest(r)); err != nil {
		d.log.Debug("gossip: asking for records", "node", peer.name, "records", len(r.want), "err", err)
	}
}

// request asks nodes for their own records (best effort: a lost request is repeated).
func (d *Discovery) request(ml *memberlist.Memberlist, targets []target) {
	msg := encodeRequest(request{from: d.name, addr: d.LocalAddr()})
	for _, t := range targets {
		d.stats.requested.Add(1)
		if err := ml.SendBestEffort(t.node(), msg); err != nil {
			d.log.Debug("gossip: asking for a record", "node", t.name, "err", err)
		}
	}
}

// queueReply schedules the answer to a request. Only members (holders of the
// key) can ask; one that is not alive in this node's view yet (views differ while nodes join) is answered at the
// address it gave.
func (d *Discovery) queueReply(r request) {
	d.mu.Lock()
	if p := d.table.peers[r.from]; p != nil && p.status == statusAlive {
		r.addr = p.addr
	}
	if d.replying[r.from] || !r.addr.IsValid() || r.from == d.name {
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

// replyLoop sends this node's record to the members that asked for it, a few at a time and at most replyRate a
// second: when a large record changes, every node asks at once.
func (d *Discovery) replyLoop(ctx context.Context, ml *memberlist.Memberlist) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		next time.Time // when the next reply may go
	)
	pace := func() time.Duration {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if next.Before(now) {
			next = now
		}
		wait := next.Sub(now)
		next = next.Add(time.Second / replyRate)
		return wait
	}
	for range replyWorkers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case r := <-d.replies:
					if !sleep(ctx, pace()) {
						return
					}
					d.reply(ml, r)
				}
			}
		})
	}
	wg.Wait()
}

// sleep waits for d or until ctx is done; it reports whether it waited the whole time.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (d *Discovery) reply(ml *memberlist.Memberlist, r request) {
	msg := d.answer(r)
	if msg == nil {
		return
	}
	d.stats.replied.Add(1)
	if err := ml.SendReliable(target{r.from, r.addr}.node(), msg); err != nil {
		d.log.Debug("gossip: answering a request", "to", r.from, "address", r.addr, "err", err)
	}
}

// answer builds the message that answers r: this node's record, or the records r names that this node holds
// (nil: nothing to send).
func (d *Discovery) answer(r request) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.replying, r.from)
	if len(r.want) == 0 {
		if d.local == nil {
			return nil
		}
		return encodeMessage(kindReply, d.local.raw)
	}
	var records [][]byte
	size := 0
	for _, name := range r.want {
		var raw []byte
		if name == d.name && d.local != nil {
			raw = d.local.raw
		} else if p := d.table.peers[name]; p != nil && p.current != nil {
			raw = p.current.raw
		}
		if raw == nil || size+len(raw) > maxAnswerBytes {
			continue
		}
		size += len(raw)
		records = append(records, raw)
	}
	if len(records) == 0 {
		return nil
	}
	return encodeMessage(kindRecords, stateBody(records))
}

func (t target) node() *memberlist.Node {
	return &memberlist.Node{Name: t.name, Addr: t.addr.Addr().AsSlice(), Port: t.addr.Port()}
}
