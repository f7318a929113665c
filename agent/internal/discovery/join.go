package discovery

import (
	"context"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// joinLoop keeps this node in the pool. While it is alone it joins the seeds, with exponential backoff and
// jitter while none answers. Once in, every Reconnect interval it tries to rejoin one node that went down or a
// seed that is not a member: memberlist forgets dead nodes, so without this two halves of a healed partition
// would stay apart.
func (d *Discovery) joinLoop(ctx context.Context, ml *memberlist.Memberlist) {
	seeds := d.seeds()
	backoff := d.tuning.JoinBackoffMin
	for {
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
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
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
	lines := strings.Fields(strings.ReplaceAll(err.Error(), "\n", " "))
	return strings.Join(lines, " ")
}
