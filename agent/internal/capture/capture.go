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

	mu        sync.Mutex
	installed *nft.Ruleset // nil when not installed by this Capture
}

// Option configures a Capture.
type Option func(*Capture)

// InNetNS makes a Capture act on the network namespace behind the file descriptor
// fd (e.g. an open /run/netns/NAME) instead of the calling process's own. The
// caller keeps fd open while the Capture is in use.
func InNetNS(fd int) Option {
	return func(c *Capture) { c.netns = fd }
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
	return nil
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
	return nil
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

// Present reports whether the agent's table exists in c's network namespace,
// whoever installed it.
func (c *Capture) Present() (bool, error) {
	st, err := nft.Inspect(c.netns)
	if err != nil {
		return false, fmt.Errorf("capture: %w", err)
	}
	return st.Present, nil
}

// Installed returns the ruleset this Capture last installed, or nil; its String
// method prints it as `nft list table inet ambient_agent` would.
func (c *Capture) Installed() *nft.Ruleset {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.installed
}

// Cleanup removes the agent's table if present, leaving every other table alone:
// what `ambient-agent cleanup` runs after the agent stopped, however it stopped.
// It is idempotent; it fails only when the kernel refuses (e.g. no CAP_NET_ADMIN).
func Cleanup(opts ...Option) error {
	c := New(opts...)
	if err := nft.Delete(c.netns); err != nil {
		return fmt.Errorf("capture: cleanup: %w", err)
	}
	return nil
}
