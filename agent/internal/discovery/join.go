package discovery

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// hintQueue bounds the addresses of unknown nodes waiting to be joined.
const hintQueue = 16

// joinLoop keeps this node in the pool.
//
//   - While it is alone it joins the seeds, with exponential backoff and jitter while none answers.
//   - Once in, every Reconnect interval it tries to rejoin one node that went down or a seed that is not a member:
//     memberlist forgets dead nodes, so without this the two halves of a healed partition would stay apart.
//   - When a record arrives from a node memberlist has not told us about (its membership gossip can miss a node
//     now and then; push/pull would fix that only minutes later in a large pool), it joins that node's address.
func (d *Discovery) joinLoop(ctx context.Context, ml *memberlist.Memberlist) {
	seeds := d.seeds()
	backoff := d.tuning.JoinBackoffMin
	tried := map[netip.AddrPort]time.Time{}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-d.hints:
			d.joinHint(ml, a, tried)
			continue
		case <-timer.C:
		}
		wait := d.tuning.Reconnect
		if d.alone() && len(seeds) > 0 {
			n, err := ml.Join(seeds)
			if n > 0 && !d.alone() {
				d.log.Info("gossip: joined", "seeds", strings.Join(seeds, ","), "answered", n, "members", d.numAlive.Load())
				backoff = d.tuning.JoinBackoffMin
			} else {
				wait = jitter(backoff)
				d.warn.logf(warnLevel, "join", "gossip: no seed answered; retrying", "seeds", strings.Join(seeds, ","),
					"retry_in", wait.Round(time.Millisecond), "err", oneLine(err))
				backoff = min(2*backoff, d.tuning.JoinBackoffMax)
			}
		} else if c := d.reconnectCandidate(seeds); c != "" {
			if _, err := ml.Join([]string{c}); err != nil {
				d.log.Debug("gossip: rejoining", "address", c, "err", err)
			}
		}
		timer.Reset(wait)
	}
}

// hint asks the join loop to join the node at a (dropped when the loop is busy: the record comes again).
func (d *Discovery) hint(a netip.AddrPort) {
	select {
	case d.hints <- a:
	default:
	}
}

// joinHint joins an address learned from a record, at most once per Reconnect interval per address.
func (d *Discovery) joinHint(ml *memberlist.Memberlist, a netip.AddrPort, tried map[netip.AddrPort]time.Time) {
	now := time.Now()
	d.mu.Lock()
	alive := d.table.aliveAddrs()[a]
	d.mu.Unlock()
	if alive || a == d.LocalAddr() || now.Sub(tried[a]) < d.tuning.Reconnect {
		return
	}
	if len(tried) >= 4*hintQueue {
		for k, t := range tried {
			if now.Sub(t) >= d.tuning.Reconnect {
				delete(tried, k)
			}
		}
	}
	tried[a] = now
	if _, err := ml.Join([]string{a.String()}); err != nil {
		d.log.Debug("gossip: joining a node known from its record", "address", a, "err", err)
		return
	}
	d.log.Info("gossip: joined a node known only from its record", "address", a)
}

// seeds are the configured seeds without this node's own address.
func (d *Discovery) seeds() []string {
	self := d.LocalAddr()
	var out []string
	for _, s := range d.opts.Join {
		if a, ok := parseSeed(s); ok && (a == self || a == d.opts.Bind) {
			continue
		}
		out = append(out, s)
	}
	return out
}

func (d *Discovery) alone() bool { return d.numAlive.Load() <= 1 }

// reconnectCandidate picks one node that is down, or a literal seed that is not an alive member ("" if none).
func (d *Discovery) reconnectCandidate(seeds []string) string {
	d.mu.Lock()
	alive := d.table.aliveAddrs()
	var out []string
	for _, a := range d.table.downAddrs() {
		out = append(out, a.String())
	}
	d.mu.Unlock()
	for _, s := range seeds {
		if a, ok := parseSeed(s); ok && !alive[a] {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return out[rand.IntN(len(out))]
}

// jitter spreads a wait over [0.8, 1.2) of its length, so that nodes restarted together do not retry together.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// oneLine flattens memberlist's multi-line join errors (one line per seed) for the log.
func oneLine(err error) string {
	if err == nil {
		return ""
	}
	return strings.Join(strings.Fields(err.Error()), " ")
}
