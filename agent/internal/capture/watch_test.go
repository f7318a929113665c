package capture

// Kernel tests of Watch: what other processes (the nft command) do to our table
// is reported within a second, what this process does is not, and nothing is
// left running once Watch returns. They need root; see requireKernel.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/leak"

	"github.com/ambient-agent/ambient-agent/nft"
)

// reportWithin is the promise: a change is reported well within this.
const reportWithin = time.Second

// quiet is how long a change that must not be reported is given to show up: the
// settle time and then some.
const quiet = 300 * time.Millisecond

type report struct {
	reason string
	at     time.Time
}

// watcher runs Watch on c for one test.
type watcher struct {
	reports chan report
	done    chan error
	cancel  context.CancelFunc
}

// startWatch runs Watch and returns once its socket listens in ns.
func startWatch(t *testing.T, c *Capture, ns *netNS) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{reports: make(chan report, 64), done: make(chan error, 1), cancel: cancel}
	go func() {
		w.done <- c.Watch(ctx, func(reason string) { w.reports <- report{reason, time.Now()} })
	}()
	t.Cleanup(func() { w.stop(t) })
	for deadline := time.Now().Add(2 * time.Second); !ns.nftablesListener(t); time.Sleep(5 * time.Millisecond) {
		select {
		case err := <-w.done:
			w.done <- err
			t.Fatalf("Watch returned before it listened: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("Watch does not listen to nftables notices after 2s")
		}
	}
	return w
}

// stop cancels Watch and waits for it; it is idempotent.
func (w *watcher) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	select {
	case err, ok := <-w.done:
		if ok && err != nil {
			t.Errorf("Watch: %v", err)
		}
		if ok {
			close(w.done)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Watch did not return 2s after its context was cancelled")
	}
}

// next waits for the next report.
func (w *watcher) next(t *testing.T, what string) report {
	t.Helper()
	select {
	case r := <-w.reports:
		return r
	case <-time.After(reportWithin):
		t.Fatalf("%s: not reported within %v", what, reportWithin)
		return report{}
	}
}

// none checks that nothing is reported for a while.
func (w *watcher) none(t *testing.T, what string) {
	t.Helper()
	select {
	case r := <-w.reports:
		t.Errorf("%s: reported %q", what, r.reason)
	case <-time.After(quiet):
	}
}

// nftablesListener reports whether a netlink socket in ns has joined the
// nftables group (NFNLGRP_NFTABLES, 7: bit 6 of the groups column).
func (ns *netNS) nftablesListener(t *testing.T) bool {
	t.Helper()
	var table []byte
	err := ns.do(nil, func() (err error) {
		table, err = os.ReadFile("/proc/thread-self/net/netlink")
		return err
	})
	if err != nil {
		t.Fatalf("read the netlink sockets of %s: %v", ns.name, err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(table)))
	sc.Scan() // the header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[1] != "12" { // NETLINK_NETFILTER
			continue
		}
		if groups, err := strconv.ParseUint(f[3], 16, 32); err == nil && groups&(1<<6) != 0 {
			return true
		}
	}
	return false
}

func TestWatch(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t)
	ns.mustNft(t, foreignTable, "-f", "-")
	c := install(t, ns, labSpec())
	noLeaks := leak.Check(t, leak.Options{Within: 2 * time.Second})
	w := startWatch(t, c, ns)

	t.Logf("this process: pid %d", os.Getpid())
	for _, tc := range []struct {
		what, script, want string
	}{
		{"delete table", "delete table inet ambient_agent", "table deleted by nft (pid "},
		{"flush ruleset", "flush ruleset", "table deleted by nft (pid "},
		{"add rule", "add rule inet ambient_agent outbound accept", "rule added to chain outbound by nft (pid "},
		{"flush chain", "flush chain inet ambient_agent outbound", "rule deleted from chain outbound by nft (pid "},
		{"delete chain", "flush chain inet ambient_agent inbound; delete chain inet ambient_agent inbound",
			"rule deleted from chain inbound, chain inbound deleted by nft (pid "},
		{"add element", "add element inet ambient_agent excluded_uids { 7 }",
			"set excluded_uids: elements differ after a change by nft (pid "},
		{"delete element", fmt.Sprintf("delete element inet ambient_agent excluded_uids { %d }", excludedUID),
			"set excluded_uids: elements differ after a change by nft (pid "},
		{"add set", "add set inet ambient_agent extra { type ipv4_addr; }", "set extra added after a change by nft (pid "},
		{"dormant", "add table inet ambient_agent { flags dormant; }", "table added or changed by nft (pid "},
	} {
		start := time.Now()
		ns.mustNft(t, tc.script+"\n", "-f", "-")
		r := w.next(t, tc.what)
		if !strings.Contains(r.reason, tc.want) {
			t.Errorf("%s: reported %q, want %q", tc.what, r.reason, tc.want)
		}
		t.Logf("%s: reported %v after nft started: %s", tc.what, r.at.Sub(start).Round(time.Millisecond), r.reason)
		if err := c.Repair(context.Background()); err != nil {
			t.Fatalf("%s: Repair: %v", tc.what, err)
		}
		w.none(t, tc.what+": Repair")
		checkListed(t, ns, c)
	}

	// Other tables are others' business, sets and elements included.
	ns.mustNft(t, foreignTable, "-f", "-") // the flush took it
	ns.mustNft(t, "", "add", "element", "inet", "filter", "blocked", "{ 192.0.2.9 }")
	ns.mustNft(t, "", "add", "rule", "inet", "filter", "input", "tcp dport 23 drop")
	ns.mustNft(t, "", "add", "table", "ip", nft.TableName) // our name, another family
	w.none(t, "other tables")

	// Nor is what this process does.
	spec := labSpec()
	spec.Outbound = false
	if err := c.Install(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := c.Repair(context.Background()); err != nil { // nothing installed: nothing to do
		t.Fatal(err)
	}
	if err := c.Install(context.Background(), labSpec()); err != nil {
		t.Fatal(err)
	}
	w.none(t, "our own Install, Remove and Install")
	if st, err := nft.Inspect(ns.fd); err != nil || !st.Present {
		t.Errorf("after Install the table is missing: %+v, %v", st, err)
	}

	w.stop(t)
	noLeaks()
	if ns.nftablesListener(t) {
		t.Error("a socket still listens to nftables notices after Watch returned")
	}
}

// TestWatchReaction measures how long a flush takes to be reported: from the
// start of the nft command (ip netns exec and nft's start-up included), and from
// its end, just after it committed.
func TestWatchReaction(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t)
	c := install(t, ns, labSpec())
	w := startWatch(t, c, ns)
	var took []string
	for range 5 {
		start := time.Now()
		ns.mustNft(t, "", "flush", "ruleset")
		end := time.Now()
		r := w.next(t, "flush ruleset")
		took = append(took, fmt.Sprintf("%v (%v after nft exited)",
			r.at.Sub(start).Round(time.Millisecond), r.at.Sub(end).Round(time.Millisecond)))
		if err := c.Repair(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	w.none(t, "our repairs")
	t.Logf("flush ruleset reported after %s", strings.Join(took, ", "))
}

func TestWatchChecksAtStart(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t)
	c := install(t, ns, labSpec())
	ns.mustNft(t, "", "delete", "table", "inet", nft.TableName)
	w := startWatch(t, c, ns)
	if r := w.next(t, "table deleted before Watch"); r.reason != "table missing when the watch began" {
		t.Errorf("reported %q", r.reason)
	}
	if err := c.Repair(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.none(t, "Repair")
}

// TestWatchReportsLostEvents overflows Watch's socket, shrunk for the test: the
// loss is reported, and Watch goes on with a new socket.
func TestWatchReportsLostEvents(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t)
	c := install(t, ns, labSpec())
	c.monitorBuffer = 16 << 10
	w := startWatch(t, c, ns)

	var elems []string
	for i := range 20000 {
		elems = append(elems, strconv.Itoa(100000+i))
	}
	ns.mustNft(t, fmt.Sprintf("add element inet %s excluded_uids { %s }\n", nft.TableName, strings.Join(elems, ", ")), "-f", "-")
	if r := w.next(t, "overflow"); !strings.Contains(r.reason, "the monitor lost events") || !strings.Contains(r.reason, "no buffer space") {
		t.Errorf("reported %q, want lost events", r.reason)
	}
	// The change that overflowed is not reported again: its notices are gone.
	w.none(t, "after the loss")

	ns.mustNft(t, "", "delete", "table", "inet", nft.TableName)
	if r := w.next(t, "delete table after the loss"); !strings.HasPrefix(r.reason, "table deleted by nft") {
		t.Errorf("reported %q", r.reason)
	}
}
