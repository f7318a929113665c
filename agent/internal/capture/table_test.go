package capture

// Kernel tests of the table itself: what the kernel holds after Install is what nft
// rendered, installing twice changes nothing, and other tables are never touched.

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/ambient-agent/ambient-agent/nft"
	"github.com/ambient-agent/ambient-agent/ports"
)

// foreignTable stands for firewalld's, ufw's or Docker's tables.
const foreignTable = `
table inet filter {
	set blocked { type ipv4_addr; elements = { 192.0.2.1 } }
	chain input {
		type filter hook input priority filter; policy accept;
		ip saddr @blocked drop
		tcp dport 22 counter accept
	}
}
`

func TestInstallReplacesOnlyOurTable(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t)
	ns.mustNft(t, foreignTable, "-f", "-")
	foreign := ns.mustNft(t, "", "-j", "list", "table", "inet", "filter")

	c := New(InNetNS(ns.fd))
	spec := labSpec()
	if err := c.Install(context.Background(), spec); err != nil {
		t.Fatalf("Install: %v", err)
	}
	checkListed(t, ns, c)
	first := withoutHandles(t, ns.mustNft(t, "", "-j", "list", "table", "inet", nft.TableName))

	if err := c.Install(context.Background(), spec); err != nil {
		t.Fatalf("second Install: %v", err)
	}
	if second := withoutHandles(t, ns.mustNft(t, "", "-j", "list", "table", "inet", nft.TableName)); second != first {
		t.Errorf("installing twice changed the table\n--- first\n%s\n--- second\n%s", first, second)
	}
	checkUntouched(t, ns, foreign, "Install")

	// A different spec replaces the table whole.
	spec.Outbound = false
	if err := c.Install(context.Background(), spec); err != nil {
		t.Fatalf("Install inbound only: %v", err)
	}
	if listed := ns.mustNft(t, "", "list", "table", "inet", nft.TableName); strings.Contains(listed, "chain outbound") {
		t.Errorf("outbound chain left after installing an inbound-only spec:\n%s", listed)
	}

	for i := range 2 {
		if err := c.Remove(); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
		checkNoTable(t, ns)
		checkUntouched(t, ns, foreign, "Remove")
	}
	if c.Installed() != nil {
		t.Error("Installed() is not nil after Remove")
	}
}

// TestKernelHoldsWhatWasRendered compares the rendering of a few specs with what
// nft reads back from the kernel: the golden files of package nft thereby describe
// the expressions that were really sent.
func TestKernelHoldsWhatWasRendered(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t)
	c := New(InNetNS(ns.fd))
	for name, spec := range map[string]nft.Spec{
		"lab":   labSpec(),
		"guard": guardSpec(),
		"edges": {
			Outbound: true, Inbound: true, GuardListeners: true, Mark: 0xffffffff, OutboundPort: 1, InboundPort: 65535,
			Workloads:             []netip.Addr{netip.MustParseAddr("::ffff:192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
			InboundExcludedPorts:  []uint16{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 65535},
			OutboundExcludedPorts: []uint16{65535},
			ExcludedCIDRs:         prefixes("0.0.0.0/0", "10.0.0.0/8", "::/0", "2001:db8::/32"),
			ExcludedUIDs:          []uint32{0, 4294967294},
			ExcludedGIDs:          []uint32{0},
		},
		"all_local": {
			Inbound: true, InboundAllLocal: true, GuardListeners: true,
			Workloads:      []netip.Addr{netip.MustParseAddr("10.0.0.5")},
			InboundLeftOut: prefixes("172.17.0.1/32", "192.168.0.0/16", "fe80::/10"),
		},
		"ranges": {
			Outbound:      true,
			ExcludedCIDRs: prefixes("10.0.0.0/8", "11.0.0.0/8", "10.1.0.0/16", "255.255.255.255/32", "192.168.0.0/16", "fd00::/8", "fe00::/8", "ffff::/16"),
		},
		"return_path": {Inbound: true, Outbound: true, InboundExcludedPorts: []uint16{15008}, ReturnMark: ports.ReturnMark},
		"same_host": {
			Inbound: true, Outbound: true, SameHost: true, InboundExcludedPorts: []uint16{15008},
			Workloads:       []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")},
			OutboundClasses: []nft.OutboundClass{{Name: "bob", Port: 15101, UIDs: []uint32{2002}}},
		},
		"empty": {},
	} {
		if err := c.Install(context.Background(), spec); err != nil {
			t.Fatalf("%s: Install: %v", name, err)
		}
		checkListed(t, ns, c)
		// What Watch compares after a change to some set: no difference yet.
		if diff, err := c.Installed().DiffSets(ns.fd); diff != "" || err != nil {
			t.Errorf("%s: DiffSets right after Install: %q, %v", name, diff, err)
		}
	}
}

func checkListed(t *testing.T, ns *netNS, c *Capture) {
	t.Helper()
	listed := ns.mustNft(t, "", "list", "table", "inet", nft.TableName)
	if got, want := oneLine(listed), oneLine(c.Installed().String()); got != want {
		t.Errorf("the kernel holds another ruleset than the one rendered\n--- nft list\n%s\n--- rendered\n%s", listed, c.Installed())
	}
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestCleanup(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t)
	ns.mustNft(t, foreignTable, "-f", "-")
	foreign := ns.mustNft(t, "", "-j", "list", "table", "inet", "filter")

	if err := Cleanup(InNetNS(ns.fd)); err != nil {
		t.Fatalf("Cleanup without our table: %v", err)
	}
	checkUntouched(t, ns, foreign, "Cleanup without our table")

	install(t, ns, labSpec()) // as if the agent had crashed with its rules in place
	for i := range 2 {
		if err := Cleanup(InNetNS(ns.fd)); err != nil {
			t.Fatalf("Cleanup #%d: %v", i+1, err)
		}
		checkNoTable(t, ns)
		checkUntouched(t, ns, foreign, "Cleanup")
	}
}

func TestCleanupInEmptyNamespace(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t)
	if err := Cleanup(InNetNS(ns.fd)); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if rs := ns.mustNft(t, "", "list", "ruleset"); strings.TrimSpace(rs) != "" {
		t.Errorf("Cleanup left something behind:\n%s", rs)
	}
}

func checkUntouched(t *testing.T, ns *netNS, before, after string) {
	t.Helper()
	// Handles included: a table deleted and re-added would get new ones.
	if now := ns.mustNft(t, "", "-j", "list", "table", "inet", "filter"); now != before {
		t.Errorf("%s changed table inet filter\n--- before\n%s\n--- after\n%s", after, before, now)
	}
}

func checkNoTable(t *testing.T, ns *netNS) {
	t.Helper()
	if out, err := ns.nft("", "list", "table", "inet", nft.TableName); err == nil {
		t.Errorf("table inet %s still there:\n%s", nft.TableName, out)
	}
}

// oneLine collapses whitespace, so that nft's wrapping of long element lists does
// not count.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// withoutHandles drops the handles from `nft -j` output: replacing the table gives
// its objects new handles, and nothing else may change.
func withoutHandles(t *testing.T, j string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(j), &v); err != nil {
		t.Fatalf("nft -j output: %v", err)
	}
	var strip func(any)
	strip = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			delete(v, "handle")
			for _, e := range v {
				strip(e)
			}
		case []any:
			for _, e := range v {
				strip(e)
			}
		}
	}
	strip(v)
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
