package xds

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Reconnection backoff: doubled after each failed attempt, reset once a stream has delivered a response.
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// Client is a delta ADS client of istiod that presents itself as a ztunnel. Build it with New, run it with
// Run, read it with Current after Changed.
type Client struct {
	opts Options
	log  *slog.Logger

	ran       atomic.Bool
	connected atomic.Bool
	current   atomic.Pointer[Update]
	changed   chan struct{}
	status    linkStatus
	metrics   *metrics

	// Owned by the Run goroutine.
	store  *store
	synced bool  // the first view of both types has been published
	view   *view // of the current Update's last build (patches change its workloads)
}

// New validates the options. It connects to nothing; Run does.
func New(o Options) (*Client, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{opts: o, log: log, changed: make(chan struct{}, 1), store: newStore(), metrics: newMetrics(o.Registerer)}
	c.current.Store(&Update{})
	c.status.s = Status{Address: o.Address, Since: time.Now()}
	return c, nil
}

// Run connects to istiod and keeps a stream open until ctx is done, reconnecting with backoff (0.5 s doubling
// to 30 s, with jitter) and resuming from what it holds (initial_resource_versions). It returns nil when ctx
// is done, and an error only when called twice.
func (c *Client) Run(ctx context.Context) error {
	if !c.ran.CompareAndSwap(false, true) {
		return errors.New("xds: Run called twice")
	}
	backoff := minBackoff
	for {
		progressed, err := c.session(ctx)
		c.metrics.terminated(ctx, progressed, err)
		wasUp := c.connected.Swap(false)
		if ctx.Err() != nil {
			return nil
		}
		c.status.update(func(s *Status) {
			s.Connected, s.LastError = false, errString(err)
			if wasUp || s.Since.IsZero() {
				s.Since = time.Now()
			}
		})
		if progressed {
			backoff = minBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1) // jitter: many hosts must not reconnect in step
		level := slog.LevelWarn
		if progressed { // istiod closes streams now and then (max connection age): not worth a warning
			level = slog.LevelInfo
		}
		c.log.Log(ctx, level, "xds: stream to istiod ended; reconnecting", "address", c.opts.Address, "error", err,
			"in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// Current returns the latest complete view: empty until istiod has answered both subscriptions once. It is
// shared and immutable.
func (c *Client) Current() Update { return *c.current.Load() }

// Changed receives a value after each change of Current. It is 1-buffered: a slow reader skips stale views
// and reads the latest.
func (c *Client) Changed() <-chan struct{} { return c.changed }

// Connected reports whether a stream to istiod is open and has delivered both subscriptions.
func (c *Client) Connected() bool { return c.connected.Load() }

// Status reports the link to istiod and what it delivered.
func (c *Client) Status() Status { return c.status.get() }

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// publish computes and swaps in the view of the store, and wakes the reader of Changed: as a patch of the
// current one when only workloads' attributes changed (patch.go), else built from everything.
func (c *Client) publish() {
	prev := c.current.Load()
	u, ok := c.patch(prev)
	if !ok {
		u, c.view = buildView(c.store, c.opts.Network)
		u.Generation = prev.Generation + 1
	}
	c.store.touched, c.store.reshaped = nil, false
	c.current.Store(&u)
	select {
	case c.changed <- struct{}{}:
	default:
	}
}
