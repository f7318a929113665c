package capture

import (
	"context"
	"fmt"
	"sync"

	"github.com/ambient-agent/ambient-agent/nft"
)

// Capture owns the agent's nftables table in one network namespace.
// Its methods are safe for concurrent use.
type Capture struct {
	netns int // file descriptor of the network namespace; 0: the process's own

	monitorBuffer int // Watch's socket receive buffer; 0: defaultMonitorBuffer (tests shrink it)

	wantLive bool // keep a live copy of the table (WithLiveCopy)

	mu        sync.Mutex
	installed *nft.Ruleset // nil when not installed by this Capture
	live      *nft.Live    // the live copy; nil before the first Install, without one, or once released
	liveErr   error        // why there is no live copy
}

// Option configures a Capture.
type Option func(*Capture)

// InNetNS makes a Capture act on the network namespace behind the file descriptor
// fd (e.g. an open /run/netns/NAME) instead of the calling process's own. The
// caller keeps fd open while the Capture is in use.
func InNetNS(fd int) Option {
	return func(c *Capture) { c.netns = fd }
}

// WithLiveCopy makes Install keep, besides the table, the running process's own
// copy of it (nft.LiveTableName): owned by the process, so no other process can
// flush it, and gone with the process. While the process runs, `nft flush
// ruleset` then leaves nothing unredirected until Watch's repair.
func WithLiveCopy() Option {
	return func(c *Capture) { c.wantLive = true }
}

// New returns a Capture that has installed nothing yet.
func New(opts ...Option) *Capture {
	c := &Capture{}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Install renders spec and replaces the agent's table with it in one atomic batch.
// Call it only once the listeners on spec's outbound and inbound ports accept;
// call it again to apply a new spec. On error the table is as it was before.
func (c *Capture) Install(ctx context.Context, spec nft.Spec) error {
	rs, err := nft.Render(spec)
	if err != nil {
		return fmt.Errorf("capture: install: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("capture: install: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := nft.Apply(rs, c.netns); err != nil {
		return fmt.Errorf("capture: install: %w", err)
	}
	c.installed = rs
	c.applyLive(rs)
	return nil
}

// applyLive brings the live copy to rs, opening it on first use. A failure
// leaves the table alone and is kept for LiveErr: the copy only shortens the
// moment after someone else deletes the table.
func (c *Capture) applyLive(rs *nft.Ruleset) {
	if !c.wantLive {
		return
	}
	if c.live == nil && c.liveErr == nil {
		c.live, c.liveErr = nft.OpenLive(c.netns)
	}
	if c.live == nil {
		return
	}
	if err := c.live.Apply(rs); err != nil {
		c.liveErr = err
		_ = c.live.Close()
		c.live = nil
	}
}

// LiveErr says why Install keeps no live copy (nil: it does, or was not asked to).
func (c *Capture) LiveErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.liveErr
}

// Release closes the live copy and leaves the table in place: what an agent
// that exits and keeps the host closed does. The exit of the process does the
// same.
func (c *Capture) Release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.releaseLive()
}

func (c *Capture) releaseLive() error {
	if c.live == nil {
		return nil
	}
	err := c.live.Close()
	c.live, c.wantLive = nil, false
	if err != nil {
		return fmt.Errorf("capture: release: %w", err)
	}
	return nil
}

// KeepLiveCopy makes the next Install keep a live copy again after Release: the agent a handoff was for went
// away, and this one serves on.
func (c *Capture) KeepLiveCopy() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wantLive, c.liveErr = true, nil
}

// Remove deletes the agent's table. It is idempotent: removing when nothing is
// installed succeeds.
func (c *Capture) Remove() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := nft.Delete(c.netns); err != nil {
		return fmt.Errorf("capture: remove: %w", err)
	}
	c.installed = nil
	return c.releaseLive()
}

// Repair installs again, whole and in one atomic batch, the ruleset c last
// installed: what to do when Watch reports that another process changed or
// removed the table. With nothing installed (never, or removed since) it does
// nothing: a table that c did not install is not c's to restore.
func (c *Capture) Repair(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("capture: repair: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.installed == nil {
		return nil
	}
	if err := nft.Apply(c.installed, c.netns); err != nil {
		return fmt.Errorf("capture: repair: %w", err)
	}
	return nil
}

// Installed returns the ruleset this Capture last installed, or nil; its String
// method prints it as `nft list table inet ambient_agent` would.
func (c *Capture) Installed() *nft.Ruleset {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.installed
}

// Cleanup removes the agent's table if present, leaving every other table alone,
// and the return path's rules and routes (AgentReturnPath): what `ambient-agent
// cleanup` runs after the agent stopped, however it stopped. It is idempotent;
// it fails only when the kernel refuses (e.g. no CAP_NET_ADMIN).
func Cleanup(opts ...Option) error {
	c := New(opts...)
	if err := nft.Delete(c.netns); err != nil {
		return fmt.Errorf("capture: cleanup: %w", err)
	}
	if c.netns == 0 { // the return path's rules are the process's namespace's (ReturnPath has no netns option)
		return AgentReturnPath(0).Remove()
	}
	return nil
}
