package nft

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	agentports "github.com/ambient-agent/ambient-agent/ports"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current rendering")

// agentPorts is what config.Capture.InboundExcludedPorts gives by default: 22, the
// agent's own ports and gossip.
var agentPorts = []uint16{22, 7946, 15000, 15001, 15006, 15008, 15020, 15021, 15053}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// goldenSpecs are the Specs with a golden file each, testdata/<name>.golden.
func goldenSpecs() map[string]Spec {
	return map[string]Spec{
		"defaults": {Inbound: true, Outbound: true, InboundExcludedPorts: agentPorts},
		"workloads": {
			Inbound: true, Outbound: true, InboundExcludedPorts: agentPorts,
			Workloads: addrs("10.0.0.6", "fd00:1::5", "10.0.0.5", "::ffff:192.168.7.1", "2001:db8::1"),
		},
		"exclusions": {
			Inbound: true, Outbound: true,
			Mark: 0x10000, OutboundPort: 16001, InboundPort: 16006,
			Workloads:             addrs("10.0.0.5", "fd00:1::5"),
			InboundExcludedPorts:  append([]uint16{8443, 22, 22}, agentPorts...),
			OutboundExcludedPorts: []uint16{5432, 443, 5432},
			ExcludedCIDRs: prefixes("10.0.0.0/8", "10.1.0.0/16", "11.0.0.0/8", "192.168.1.7/32",
				"169.254.0.0/16", "fd00::/8", "2001:db8::/32", "2001:db8:1::/48", "ff00::/8"),
			ExcludedUIDs: []uint32{1000, 0, 65534},
			ExcludedGIDs: []uint32{998},
		},
		"inbound_only": {Inbound: true, InboundExcludedPorts: agentPorts, Workloads: addrs("10.0.0.5")},
		"all_local": {
			Inbound: true, Outbound: true, GuardListeners: true, InboundExcludedPorts: agentPorts,
			Workloads: addrs("10.0.0.5", "fd00:1::5"), InboundAllLocal: true,
			InboundLeftOut: prefixes("172.17.0.1/32", "192.168.0.0/16", "192.168.1.0/24", "fe80::/10"),
		},
		"outbound_only": {Outbound: true, ExcludedCIDRs: prefixes("0.0.0.0/0")},
		"return_path":   {Inbound: true, Outbound: true, InboundExcludedPorts: agentPorts, ReturnMark: agentports.ReturnMark},
		"same_host": {
			Inbound: true, Outbound: true, SameHost: true, InboundExcludedPorts: agentPorts,
			Workloads:       addrs("10.0.0.5", "fd00:1::5"),
			OutboundClasses: []OutboundClass{{Name: "alice", Port: 15101, UIDs: []uint32{2001}}, {Name: "bob", Port: 15102, UIDs: []uint32{2002}}},
		},
		"disabled": {},
		"classes": {
			Outbound: true, ExcludedUIDs: []uint32{0},
			OutboundClasses: []OutboundClass{
				{Name: "web", Port: 15101, UIDs: []uint32{1001, 1000, 1001}},
				{Name: "billing", Port: 15102, GIDs: []uint32{2000}, Cgroups: []CgroupMatch{
					{Path: `system.slice/billing\x2dv2.service`, Level: 2, ID: 4242}, // systemd's escaping
					{Level: 3, ID: 77}, // no path: printed as its id
				}},
			},
		},
		"unmatched_bypass": {
			Outbound: true, UnmatchedBypass: true,
			OutboundClasses: []OutboundClass{
				{Name: "web", Port: 15101, UIDs: []uint32{1000}, GIDs: []uint32{1000}},
			},
		},
		"guard": {
			Inbound: true, Outbound: true, GuardListeners: true, Mark: 0x10000, InboundExcludedPorts: agentPorts,
			OutboundClasses: []OutboundClass{{Name: "web", Port: 15101, UIDs: []uint32{1000}}},
		},
	}
}

// The guard covers exactly the ports the table redirects to.
func TestGuardedPorts(t *testing.T) {
	web := []OutboundClass{{Name: "web", Port: 15101, UIDs: []uint32{1000}}}
	for _, tc := range []struct {
		name string
		spec Spec
		want string // the guard's set, "" for no guard
	}{
		{"both ways", Spec{Inbound: true, Outbound: true, OutboundClasses: web}, "15001, 15006, 15101"},
		{"own ports", Spec{Inbound: true, Outbound: true, InboundPort: 16006, OutboundPort: 16001}, "16001, 16006"},
		{"inbound only", Spec{Inbound: true, OutboundClasses: web}, "15006"},
		{"outbound only", Spec{Outbound: true}, "15001"},
		{"unmatched bypass", Spec{Outbound: true, UnmatchedBypass: true, OutboundClasses: web}, "15101"},
		{"nothing captured", Spec{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.GuardListeners = true
			rs, err := Render(tc.spec)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			text := rs.String()
			if tc.want == "" {
				if strings.Contains(text, "chain guard") {
					t.Errorf("a guard without redirects:\n%s", text)
				}
				return
			}
			if want := "set guarded_ports {\n\t\ttype inet_service\n\t\telements = { " + tc.want + " }"; !strings.Contains(text, want) {
				t.Errorf("want %q in\n%s", want, text)
			}
			if !strings.Contains(text, "chain guard") {
				t.Errorf("no guard chain:\n%s", text)
			}
		})
	}
}

func TestGolden(t *testing.T) {
	for name, spec := range goldenSpecs() {
		t.Run(name, func(t *testing.T) {
			rs, err := Render(spec)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			checkGolden(t, filepath.Join("testdata", name+".golden"), rs.String())
		})
	}
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./nft -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("rendering differs from %s (go test ./nft -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestRenderIgnoresOrderAndDuplicates(t *testing.T) {
	a := Spec{
		Inbound: true, Outbound: true,
		Workloads:            addrs("10.0.0.5", "fd00::1", "10.0.0.4"),
		InboundExcludedPorts: []uint16{22, 15008},
		ExcludedCIDRs:        prefixes("10.0.0.0/8", "10.2.0.0/16", "fd00::/8"),
		ExcludedUIDs:         []uint32{5, 1},
		OutboundClasses: []OutboundClass{{Name: "web", Port: 15101, UIDs: []uint32{7, 3}, Cgroups: []CgroupMatch{
			{Path: "b", Level: 1, ID: 9}, {Path: "a", Level: 1, ID: 8},
		}}},
	}
	b := Spec{
		Inbound: true, Outbound: true,
		Workloads:            addrs("fd00::1", "10.0.0.4", "10.0.0.5", "10.0.0.4"),
		InboundExcludedPorts: []uint16{15008, 22, 15008},
		ExcludedCIDRs:        prefixes("fd00::/8", "10.2.0.0/16", "10.0.0.0/8"),
		ExcludedUIDs:         []uint32{1, 5, 5},
		OutboundClasses: []OutboundClass{{Name: "web", Port: 15101, UIDs: []uint32{3, 7, 3}, Cgroups: []CgroupMatch{
			{Path: "a", Level: 1, ID: 8}, {Path: "b", Level: 1, ID: 9}, {Path: "a", Level: 1, ID: 8},
		}}},
	}
	ra, err := Render(a)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := Render(b)
	if err != nil {
		t.Fatal(err)
	}
	if ra.String() != rb.String() {
		t.Errorf("equal specs render differently:\n%s\n%s", ra, rb)
	}
}

func TestRenderRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		want []string // substrings of the error
	}{
		{"same ports", Spec{OutboundPort: 15006}, []string{"OutboundPort and InboundPort are both 15006"}},
		{"return mark in the agent's mark", Spec{ReturnMark: 0x1}, []string{"ReturnMark 0x1 shares bits with Mark 0x539"}},
		{"same host without inbound", Spec{Outbound: true, SameHost: true}, []string{"SameHost needs both Inbound and Outbound"}},
		{"loopback workload", Spec{Workloads: addrs("10.0.0.1", "127.0.0.1")}, []string{"Workloads[1]", "loopback"}},
		{"unspecified workload", Spec{Workloads: addrs("::")}, []string{"Workloads[0]", "unspecified"}},
		{"zone", Spec{Workloads: addrs("fe80::1%eth0")}, []string{"Workloads[0]", "zone"}},
		{"multicast", Spec{Workloads: addrs("224.0.0.1")}, []string{"Workloads[0]", "multicast"}},
		{"invalid workload", Spec{Workloads: []netip.Addr{{}}}, []string{"Workloads[0]", "not a valid address"}},
		{"invalid prefix", Spec{ExcludedCIDRs: []netip.Prefix{{}}}, []string{"ExcludedCIDRs[0]"}},
		{"mapped prefix", Spec{ExcludedCIDRs: prefixes("::ffff:10.0.0.0/104")}, []string{"ExcludedCIDRs[0]", "IPv4-mapped"}},
		{"class port 0", Spec{OutboundClasses: []OutboundClass{{Name: "a", UIDs: []uint32{1}}}},
			[]string{"OutboundClasses[0]: Port 0"}},
		{"class on the outbound port", Spec{OutboundPort: 16001, OutboundClasses: []OutboundClass{{Name: "a", Port: 16001, UIDs: []uint32{1}}}},
			[]string{"OutboundClasses[0]: Port 16001 is OutboundPort"}},
		{"class on the inbound port", Spec{OutboundClasses: []OutboundClass{{Name: "a", Port: 15006, UIDs: []uint32{1}}}},
			[]string{"OutboundClasses[0]: Port 15006 is InboundPort"}},
		{"class on the HBONE port", Spec{OutboundClasses: []OutboundClass{{Name: "a", Port: 15008, UIDs: []uint32{1}}}},
			[]string{"OutboundClasses[0]: Port 15008 is the HBONE port"}},
		{"class on the DNS port", Spec{OutboundClasses: []OutboundClass{{Name: "a", Port: 15053, UIDs: []uint32{1}}}},
			[]string{"OutboundClasses[0]: Port 15053 is the DNS proxy port"}},
		{"classes on one port", Spec{OutboundClasses: []OutboundClass{
			{Name: "a", Port: 15101, UIDs: []uint32{1}},
			{Name: "b", Port: 15102, UIDs: []uint32{2}},
			{Name: "c", Port: 15101, GIDs: []uint32{3}},
		}}, []string{"OutboundClasses[2]: Port 15101 is the port of OutboundClasses[0]"}},
		{"class without matcher", Spec{OutboundClasses: []OutboundClass{{Name: "a", Port: 15101}}},
			[]string{"OutboundClasses[0]: no UIDs, GIDs or Cgroups"}},
		{"class without name", Spec{OutboundClasses: []OutboundClass{{Port: 15101, UIDs: []uint32{1}}}},
			[]string{"OutboundClasses[0]: Name: empty"}},
		{"class name with a quote", Spec{OutboundClasses: []OutboundClass{{Name: `a"b`, Port: 15101, UIDs: []uint32{1}}}},
			[]string{"OutboundClasses[0]: Name:", "a quote, a backslash or an unprintable character"}},
		{"class name too long", Spec{OutboundClasses: []OutboundClass{{Name: strings.Repeat("a", 101), Port: 15101, UIDs: []uint32{1}}}},
			[]string{"OutboundClasses[0]: Name: longer than 100 bytes"}},
		{"cgroup level", Spec{OutboundClasses: []OutboundClass{{Name: "a", Port: 15101, Cgroups: []CgroupMatch{
			{Level: 1, ID: 5}, {Level: 0, ID: 5}, {Level: 256, ID: 5},
		}}}}, []string{"Cgroups[1]: level 0, want 1 to 255", "Cgroups[2]: level 256, want 1 to 255"}},
		{"cgroup id", Spec{OutboundClasses: []OutboundClass{{Name: "a", Port: 15101, Cgroups: []CgroupMatch{{Level: 1}}}}},
			[]string{"OutboundClasses[0]: Cgroups[0]: id 0"}},
		{"cgroup path", Spec{OutboundClasses: []OutboundClass{{Name: "a", Port: 15101, Cgroups: []CgroupMatch{
			{Path: "/system.slice/a.service", Level: 2, ID: 5}, {Path: "x\ny", Level: 1, ID: 5},
		}}}}, []string{"Cgroups[0]: path \"/system.slice/a.service\" is absolute",
			`Cgroups[1]: path "x\ny" holds a quote or a control character`}},
		{"port 0", Spec{InboundExcludedPorts: []uint16{0}, OutboundExcludedPorts: []uint16{1, 0}},
			[]string{"InboundExcludedPorts: port 0", "OutboundExcludedPorts: port 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(tc.spec)
			if err == nil {
				t.Fatal("Render accepted an invalid spec")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
