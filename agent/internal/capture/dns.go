package capture

import (
	"fmt"

	"github.com/ambient-agent/ambient-agent/nft"
)

// DNSCapture redirects the host's DNS queries (UDP and TCP to port 53) to the
// agent's DNS proxy through the table inet ambient_agent_dns, and it fails open:
// unlike the main table, which outlives the agent so that TCP capture fails
// closed, this table belongs to a netlink socket that the DNSCapture holds (the
// kernel's table owner flag). When the socket closes, on Close or when the process
// exits however it exits (kill -9 included), the kernel deletes the table, and the
// host's DNS goes to its usual servers again. A broken name lookup would take the
// whole host down, not just the mesh.
//
// Nothing else can change or delete an owned table, so Cleanup never needs to, and
// cannot, touch it: while it exists, a live process owns it. For the same reason a
// second agent's InstallDNS fails while the first one runs.
type DNSCapture struct {
	table   *nft.OwnedTable
	ruleset *nft.DNSRuleset
}

// InstallDNS renders spec and installs the DNS table in one atomic batch, in the
// calling process's network namespace or the one given with InNetNS. Call it once
// the DNS proxy listens on spec's port, on 127.0.0.1 (and on ::1 with spec.IPv6).
// The table lasts until Close or the end of the process.
func InstallDNS(spec nft.DNSSpec, opts ...Option) (*DNSCapture, error) {
	rs, err := nft.RenderDNS(spec)
	if err != nil {
		return nil, fmt.Errorf("capture: install DNS: %w", err)
	}
	t, err := nft.InstallDNS(rs, New(opts...).netns)
	if err != nil {
		return nil, fmt.Errorf("capture: install DNS: %w", err)
	}
	return &DNSCapture{table: t, ruleset: rs}, nil
}

// Close deletes the DNS table and closes the socket that owns it. It is
// idempotent and safe for concurrent use.
func (d *DNSCapture) Close() error {
	if err := d.table.Close(); err != nil {
		return fmt.Errorf("capture: remove DNS: %w", err)
	}
	return nil
}

// Installed returns the installed ruleset; its String method prints it as `nft
// list table inet ambient_agent_dns` would (less nft's "# progname" comment).
func (d *DNSCapture) Installed() *nft.DNSRuleset { return d.ruleset }

// Release leaves the table to the process this one handed its socket to (Dup); without one the kernel deletes it.
func (d *DNSCapture) Release() error { return d.table.Release() }

// Dup is a new descriptor of the socket that owns the table, for the agent that takes over from this one.
func (d *DNSCapture) Dup() (int, error) { return d.table.Dup() }

// AdoptDNS is the DNS table installed from spec by the agent this one takes over from, through fd, a descriptor
// of the socket that owns it.
func AdoptDNS(spec nft.DNSSpec, fd int) (*DNSCapture, error) {
	rs, err := nft.RenderDNS(spec)
	if err != nil {
		return nil, fmt.Errorf("capture: adopt DNS: %w", err)
	}
	return &DNSCapture{table: nft.AdoptOwned(nft.DNSTableName, fd), ruleset: rs}, nil
}
