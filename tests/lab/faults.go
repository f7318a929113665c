package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Faults on the lab's network, applied on the switch (the hosts themselves are untouched): packet loss and
// partitions by nftables rules of the bridge (table bridge lab_faults), a slow link by a token bucket on the
// host's port. This kernel has no netem, so a slow link is a rate limit whose queue delays packets, not a fixed
// delay.

const faultTable = "lab_faults"

func (l *Lab) switchHost() *Host { return &Host{lab: l, Name: "switch", NS: l.sw, Dir: l.dir} }

// nft runs an nft script in the switch namespace.
func (l *Lab) nft(script string) error {
	cmd := l.switchHost().Command(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s\n%s", err, out, script)
	}
	return nil
}

// faultRules replaces the switch's fault rules with rules (nft rule statements of the bridge's forward chain).
func (l *Lab) faultRules(rules ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "table bridge %s {}\ndelete table bridge %s\ntable bridge %s {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n", faultTable, faultTable, faultTable)
	for _, r := range rules {
		fmt.Fprintf(&b, "    %s\n", r)
	}
	b.WriteString("  }\n}\n")
	return l.nft(b.String())
}

// Lose drops percent % of the frames to and from h, at random.
func (l *Lab) Lose(h *Host, percent int) error {
	return l.faultRules(
		fmt.Sprintf("iifname %q numgen random mod 100 < %d drop", h.Name, percent),
		fmt.Sprintf("oifname %q numgen random mod 100 < %d drop", h.Name, percent))
}

// Partition cuts every host of a off every host of b, both ways; the others still reach everyone.
func (l *Lab) Partition(a, b []*Host) error {
	names := func(hs []*Host) string {
		q := make([]string, len(hs))
		for i, h := range hs {
			q[i] = fmt.Sprintf("%q", h.Name)
		}
		return "{ " + strings.Join(q, ", ") + " }"
	}
	return l.faultRules(
		fmt.Sprintf("iifname %s oifname %s drop", names(a), names(b)),
		fmt.Sprintf("iifname %s oifname %s drop", names(b), names(a)))
}

// Slow limits what the switch sends to h to rate (tc's units, "2mbit"): a queue of up to latency builds up.
func (l *Lab) Slow(h *Host, rate string, latency time.Duration) error {
	_, err := l.switchHost().Run(l.ctx(), "tc", "qdisc", "replace", "dev", h.Name, "root", "tbf", "rate", rate,
		"burst", "16kbit", "latency", fmt.Sprintf("%dms", latency.Milliseconds()))
	return err
}

// Heal removes every fault: rules and rate limits.
func (l *Lab) Heal() error {
	err := l.faultRules()
	for _, h := range l.Hosts {
		_, _ = l.switchHost().Run(l.ctx(), "tc", "qdisc", "del", "dev", h.Name, "root")
	}
	return err
}

// DialFrom is Dial from the source address src (one of the host's).
func (h *Host) DialFrom(ctx context.Context, src netip.Addr, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.inNetNS(func() (err error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// CaptureFiltered is Capture with a tcpdump filter of its own (Capture records all TCP).
func (l *Lab) CaptureFiltered(name string, h *Host, filter string) func() string {
	return l.capture(name, h, filter)
}

// Switch is the lab's switch, as a host: to run tcpdump on its ports.
func (l *Lab) Switch() *Host { return l.switchHost() }
