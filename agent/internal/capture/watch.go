package capture

// Watching the table. The kernel announces every change to nftables that it
// commits to the netlink sockets that joined the nftables group: each changed
// object, then a "new generation" notice naming the process that committed the
// batch. google/nftables groups the notices by generation; Watch keeps the
// generations of other processes that touch our table.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"

	"github.com/ambient-agent/ambient-agent/nft"
)

// defaultMonitorBuffer is the receive buffer of Watch's netlink socket. The kernel
// announces each rule and each set element of a batch in a notice of its own, all
// at once when the batch commits: the flush of a large ruleset (Docker's,
// firewalld's), or our own install with long lists, must fit, or the socket
// overflows and loses them (Watch then reports that).
const defaultMonitorBuffer = 8 << 20

// settle is how long Watch gathers changes after the first before it reports
// them, once. The monitor hands over each commit whole (its notices grouped by
// generation), so this only joins commits that follow one another at once. It
// is short: from a deletion to the repair, captured traffic is not redirected.
const settle = 2 * time.Millisecond

// Watch calls changed(reason) each time another process changes or removes the
// agent's table in c's network namespace, until ctx is done; then it returns nil.
// It fails only when it cannot start listening (e.g. without CAP_NET_ADMIN).
//
// It listens to the kernel's nftables notices (it does not poll), and reports
// within about 50 ms what other processes commit to table inet ambient_agent: the
// table deleted (`nft flush ruleset`, `nft delete table`, `systemctl restart
// nftables`, `ambient-agent cleanup`), added or changed (made dormant), a chain
// or a rule added or deleted in it, its sets or their elements changed. Changes
// that follow each other closely are reported together. What this process
// commits (Install, Repair, Remove) is not reported. The reason says what
// happened and who did it: "table deleted by nft (pid 1234)". Watch begins by
// comparing the table with the one c installed (chains, sets and elements, not
// rules) and reports a difference: start it right after Install.
//
// When notices are lost (the socket overflowed, or failed), Watch cannot tell
// what changed: it reports that ("the monitor lost events ..."), after it has
// opened a new socket, so that nothing after the report goes unseen either.
//
// changed runs on Watch's goroutine, so it should return soon (send on a
// channel); it may call Repair. A caller that repairs on every report should
// bound how often: if another process keeps rewriting the table, or overflows
// keep recurring, repairs would follow each other without end.
//
// Two limits. The kernel names the committing thread by its pid in the host's
// pid namespace: the agent must run there (its systemd unit does), or its own
// changes look like another process's. And the kernel's notice of a set or
// element change names its table, but google/nftables drops the name: Watch
// compares our sets in the kernel with the ruleset c installed instead, so with
// nothing installed by c, only table, chain and rule changes are reported.

func (c *Capture) Watch(ctx context.Context, changed func(reason string)) error {
	m, err := c.openMonitor()
	if err != nil {
		return fmt.Errorf("capture: watch: %w", err)
	}
	// What changed before the socket listened is seen only this way.
	if diff := c.checkInstalled(); diff != "" {
		changed(diff + " when the watch began")
	}
	for {
		err := c.follow(ctx, m, changed)
		m.close()
		if ctx.Err() != nil {
			return nil
		}
		if m = c.reopenMonitor(ctx, err, changed); m == nil {
			return nil
		}
	}
}

// follow reads m until ctx is done or m fails, and reports the changes of other
// processes to our table a settle after the first of them.
func (c *Capture) follow(ctx context.Context, m *monitor, changed func(string)) error {
	var pending changes
	var report <-chan time.Time // non-nil while changes wait to be reported
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case gen, ok := <-m.events:
			if !ok {
				return errors.New("monitor closed")
			}
			if gen.GeneratedBy.Type == nftables.MonitorEventTypeOOB {
				return gen.GeneratedBy.Error
			}
			if pending.add(gen) && report == nil {
				report = time.After(settle)
			}
		case <-report:
			if reason := c.describe(pending); reason != "" {
				changed(reason)
			}
			pending, report = changes{}, nil
		}
	}
}

// reopenMonitor opens a new monitor after the last one failed with lost, and
// only then reports the loss. While no socket can be opened it retries, and says
// so once. It returns nil when ctx is done.
func (c *Capture) reopenMonitor(ctx context.Context, lost error, changed func(string)) *monitor {
	reason := fmt.Sprintf("the monitor lost events (%v): the table may have changed", lost)
	wait := 10 * time.Millisecond
	for attempt := 0; ; attempt++ {
		m, err := c.openMonitor()
		if err == nil {
			changed(reason)
			return m
		}
		if attempt == 0 {
			changed(fmt.Sprintf("%s; reopening the monitor failed, retrying: %v", reason, err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// describe says what the gathered changes did to our table, "" if nothing.
// Changes to sets and elements, which the notices do not tie to a table, are
// checked against the kernel, unless a change to our table is reported anyway.
func (c *Capture) describe(p changes) string {
	reasons := p.ours
	if len(reasons) == 0 && len(p.setAuthors) > 0 {
		if diff := c.checkInstalled(); diff != "" {
			reasons = append(reasons, diff+" after a change by "+strings.Join(p.setAuthors, ", "))
		}
	}
	return strings.Join(reasons, "; ")
}

// checkInstalled compares the table in the kernel with the ruleset c installed,
// as far as it can be read back: there, with the same chains, sets and
// elements; "" when they match or c installed nothing. Rules are not compared:
// google/nftables cannot read all of ours back. c.mu keeps an Install from
// running in between.
func (c *Capture) checkInstalled() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.installed == nil {
		return ""
	}
	st, err := nft.Inspect(c.netns)
	switch {
	case err != nil:
		return fmt.Sprintf("cannot compare the table with the kernel's: %v", err)
	case !st.Present:
		return "table missing"
	case !slices.Equal(st.Chains, c.installed.ChainNames()):
		return fmt.Sprintf("chains %v, want %v", st.Chains, c.installed.ChainNames())
	}
	diff, err := c.installed.DiffSets(c.netns)
	if err != nil {
		return fmt.Sprintf("cannot compare the table with the kernel's: %v", err)
	}
	return diff
}

// changes gathers what the generations of other processes did, until reported.
type changes struct {
	ours       []string // one per generation: "table deleted by nft (pid 1234)"
	setAuthors []string // who changed sets or elements, of whichever table
}

// add takes in one generation. It reports whether the generation is another
// process's and may concern our table.
func (p *changes) add(gen *nftables.MonitorEvents) bool {
	gm, _ := gen.GeneratedBy.Data.(*nftables.GenMsg)
	if committedByUs(gm) {
		return false
	}
	who := author(gm)
	var what []string
	setsChanged := false
	for _, ev := range gen.Changes {
		switch ev.Type {
		case nftables.MonitorEventTypeNewSet, nftables.MonitorEventTypeDelSet,
			nftables.MonitorEventTypeNewSetElem, nftables.MonitorEventTypeDelSetElem:
			setsChanged = true
		default:
			if w := ourChange(ev); w != "" && !slices.Contains(what, w) {
				what = append(what, w)
			}
		}
	}
	if len(what) > 0 {
		p.ours = append(p.ours, summary(what)+" by "+who)
		return true
	}
	if setsChanged && !slices.Contains(p.setAuthors, who) {
		p.setAuthors = append(p.setAuthors, who)
	}
	return setsChanged
}

// summary joins what one generation did to our table; a deleted or added table
// says it all.
func summary(what []string) string {
	deleted, added := slices.Contains(what, tableDeleted), slices.Contains(what, tableAdded)
	switch {
	case deleted && added:
		return "table replaced"
	case deleted:
		return tableDeleted
	case added:
		return tableAdded
	}
	return strings.Join(what, ", ")
}

const (
	tableDeleted = "table deleted"
	tableAdded   = "table added or changed" // a table made dormant is announced as added
)

// ourChange says what ev did to our table; "" when it is about another table, or
// about an object that google/nftables does not tie to a table.
func ourChange(ev *nftables.MonitorEvent) string {
	switch d := ev.Data.(type) {
	case *nftables.Table:
		if isOurTable(d) {
			if ev.Type == nftables.MonitorEventTypeDelTable {
				return tableDeleted
			}
			return tableAdded
		}
	case *nftables.Chain:
		if isOurTable(d.Table) {
			if ev.Type == nftables.MonitorEventTypeDelChain {
				return "chain " + d.Name + " deleted"
			}
			return "chain " + d.Name + " added or changed"
		}
	case *nftables.Rule:
		if isOurTable(d.Table) {
			chain := "?"
			if d.Chain != nil {
				chain = d.Chain.Name
			}
			if ev.Type == nftables.MonitorEventTypeDelRule {
				return "rule deleted from chain " + chain
			}
			return "rule added to chain " + chain
		}
	}
	return ""
}

func isOurTable(t *nftables.Table) bool {
	return t != nil && t.Name == nft.TableName && t.Family == nftables.TableFamilyINet
}

// committedByUs reports whether this process committed a generation. The kernel
// names the thread that sent the batch, not the process: any of our threads.
func committedByUs(gm *nftables.GenMsg) bool {
	if gm == nil {
		return false
	}
	pid := int(gm.ProcPID)
	if pid == os.Getpid() {
		return true
	}
	_, err := os.Stat("/proc/self/task/" + strconv.Itoa(pid))
	return err == nil
}

func author(gm *nftables.GenMsg) string {
	if gm == nil {
		return "an unknown process"
	}
	return fmt.Sprintf("%s (pid %d)", gm.ProcComm, gm.ProcPID)
}

// monitor is a netlink socket that joined the nftables group, read by a goroutine
// of google/nftables that hands over the notices on events, a generation at a
// time.
type monitor struct {
	conn   *nftables.Conn
	events chan *nftables.MonitorEvents
}

// openMonitor opens a monitor in c's network namespace. The connection is a
// lasting one because google/nftables v0.3.0 closes a monitor's socket only on
// Monitor.Close, and not at all after the monitor failed; CloseLasting closes it
// in every case.
func (c *Capture) openMonitor() (*monitor, error) {
	size := cmp.Or(c.monitorBuffer, defaultMonitorBuffer)
	conn, err := nftables.New(nftables.WithNetNSFd(c.netns), nftables.AsLasting(),
		nftables.WithSockOptions(func(nl *netlink.Conn) error { return nl.SetReadBuffer(size) }))
	if err != nil {
		return nil, fmt.Errorf("monitor nftables: %w", err)
	}
	events, err := conn.AddGenerationalMonitor(nftables.NewMonitor(nftables.WithMonitorEventBuffer(64)))
	if err != nil {
		_ = conn.CloseLasting()
		return nil, fmt.Errorf("monitor nftables: %w", err)
	}
	return &monitor{conn: conn, events: events}, nil
}

// close closes the socket and waits for the reading goroutine to end: its read
// fails, it hands over what it holds and closes events.
func (m *monitor) close() {
	_ = m.conn.CloseLasting()
	for range m.events {
	}
}
