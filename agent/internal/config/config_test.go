package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	cfg, err := Parse("test.toml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

func problems(t *testing.T, src string) []string {
	t.Helper()
	_, err := Parse("test.toml", []byte(src))
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Parse: want Problems, got %v", err)
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func TestShippedConfigIsValid(t *testing.T) {
	path := filepath.Join("..", "..", "..", "conf", "config.toml")
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("conf/config.toml does not validate:\n%v", err)
	}
	if cfg.Node.TrustDomain != DefaultTrustDomain || cfg.Identity.Source != SourceFiles ||
		cfg.Admin.Address.String() != DefaultAdminAddress || cfg.Node.DrainTimeout != DefaultDrainTimeout {
		t.Errorf("shipped config does not carry the defaults: %+v", cfg)
	}
}

// Every key of the user struct must be documented in conf/config.toml.
func TestShippedConfigDocumentsEveryKey(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "..", "conf", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{
		"[node]", "name", "trust_domain", "network", "cluster_id", "drain_timeout",
		"[identity]", "source", "dir", "spire_socket",
		"[capture]", "enabled", "mark", "exclude_inbound_ports", "exclude_outbound_ports", "exclude_cidrs",
		"exclude_uids", "exclude_gids",
		"[gossip]", "bind", "advertise", "join", "key_file", "insecure_dev_mode", "grace_period",
		"[[workload]]", "[[remote_workload]]", "node", "tunnel", "namespace", "service_account", "addresses", "labels",
		"use_waypoint", "capacity", "[workload.health]", "kind", "port", "path", "interval", "timeout",
		"unhealthy_threshold", "healthy_threshold", "user", "group", "unit", "unmatched", "default_workload",
		"[istio]", "server_name", "root_cert", "token_dir", "discovery", "insecure_plaintext",
		"[[service]]", "hostname", "vips", "ports", "target_port", "app_protocol", "workloads",
		"[waypoint]", "for_service_account", "[gateway]", "gateway_identities", "[dns]", "listen", "capture", "upstreams", "domains", "waypoint_enforcement",
		"[policy]", "root_namespace", "[admin]", "socket", "address", "readiness_address", "metrics_address", "[log]", "level", "format",
		"access", "inbound_addresses", "unmeshed_addresses", "[limits]", "handshakes_per_source", "handshakes",
		"connections_per_source", "connections", "streams_per_source", "streams", "outbound", "original_source",
	} {
		if !strings.Contains(string(src), key) {
			t.Errorf("conf/config.toml does not mention %s", key)
		}
	}
}

// A gateway takes the host's network and Istio's east-west gateway identity unless told otherwise, and peers
// accept that identity as a gateway's; one its peers would ignore is warned about.
func TestGatewayDefaults(t *testing.T) {
	cfg := mustParse(t, "[node]\nnetwork = \"net-b\"\n[gateway]\nenabled = true\naddresses = [\"10.3.0.2\"]\n")
	g := cfg.Gateway
	if !g.Enabled || g.Network != "net-b" || g.Namespace != DefaultGatewayNamespace || g.ServiceAccount != DefaultGatewaySA ||
		len(g.Addresses) != 1 || g.Addresses[0].String() != "10.3.0.2" {
		t.Errorf("gateway: %+v", g)
	}
	if ids := cfg.Gossip.GatewayIdentities; len(ids) != 1 || ids[0] != "istio-system/istio-eastwestgateway" {
		t.Errorf("gossip.gateway_identities default: %v", ids)
	}
	cfg = mustParse(t, "[node]\nnetwork = \"net-b\"\n[gossip]\nenabled = true\n[gateway]\nenabled = true\nservice_account = \"gw\"\naddresses = [\"10.3.0.2\"]\n")
	if w := strings.Join(cfg.Warnings(), "\n"); !strings.Contains(w, "gateway: identity istio-system/gw is not in gossip.gateway_identities") {
		t.Errorf("no warning for a gateway identity peers ignore: %q", w)
	}
}

func TestDefaults(t *testing.T) {
	cfg := mustParse(t, "[node]\nname = \"vm-1\"\n")
	if cfg.Node.Name != "vm-1" || cfg.Log.Format != FormatText || !cfg.Capture.Enabled ||
		cfg.Capture.Mark != DefaultMark || !cfg.Capture.OriginalSource || len(cfg.Workloads) != 0 {
		t.Errorf("defaults not resolved: %+v", cfg)
	}
	if got := cfg.Capture.InboundExcludedPorts(); len(got) != 8 || got[0] != 22 {
		t.Errorf("InboundExcludedPorts = %v, want 22 and the agent's 7 ports", got)
	}
}

func TestFullConfig(t *testing.T) {
	cfg := mustParse(t, `
[node]
name = "vm-1"
trust_domain = "example.org"
drain_timeout = "2s"
[capture]
enabled = false
mark = 0x10
exclude_cidrs = ["169.254.169.254/32", "fd00::/8"]
[[workload]]
name = "reviews"
namespace = "shop"
service_account = "reviews-sa"
addresses = ["10.0.0.5", "fd00::5"]
labels = { app = "reviews", version = "v1" }
[[workload]]
name = "ratings"
addresses = ["10.0.0.6"]
[[remote_workload]]
name = "details"
addresses = ["10.0.1.9"]
node = "vm-2"
tunnel = "none"
labels = { app = "details" }
[log]
level = "debug"
format = "json"
`)
	if r := cfg.Remotes[0]; r.Name != "details" || r.Node != "vm-2" || r.Tunnel != TunnelNone || r.Labels["app"] != "details" ||
		r.Namespace != DefaultNamespace {
		t.Errorf("remote workload wrong: %+v", r)
	}
	if cfg.Node.DrainTimeout != 2*time.Second || cfg.Capture.Enabled || cfg.Capture.Mark != 0x10 ||
		len(cfg.Capture.ExcludeCIDRs) != 2 {
		t.Errorf("node/capture wrong: %+v %+v", cfg.Node, cfg.Capture)
	}
	w := cfg.Workloads[1]
	if w.Namespace != DefaultNamespace || w.ServiceAccount != DefaultServiceAccount || w.Addresses[0].String() != "10.0.0.6" {
		t.Errorf("workload defaults wrong: %+v", w)
	}
	if cfg.Workloads[0].Labels["version"] != "v1" {
		t.Errorf("labels lost: %+v", cfg.Workloads[0])
	}
}

func TestProblems(t *testing.T) {
	cases := []struct {
		name, src string
		want      []string
	}{
		{"unknown key", "[node]\nname = \"a\"\n[gossip]\njion = [\"a\"]\n",
			[]string{"test.toml:4: gossip.jion: unknown key"}},
		{"unknown key in known table", "[node]\nnmae = \"a\"\n",
			[]string{"test.toml:2: node.nmae: unknown key"}},
		{"unknown empty table", "[nope]\n", []string{"test.toml:1: nope: unknown table"}},
		{"wrong type", "[node]\nname = 5\n",
			[]string{"test.toml:2: node.name: wrong type: TOML value has type int64; destination has type string"}},
		{"every wrong type at once", "[node]\nname = 5\n[gossip]\nenabled = \"yes\"\n[[workload]]\nname = \"a\"\ncapacity = \"big\"\n[[workload]]\nname = 7\naddresses = \"10.0.0.2\"\n",
			[]string{"test.toml:2: node.name: wrong type: TOML value has type int64; destination has type string",
				"test.toml:4: gossip.enabled: wrong type: TOML value has type string; destination has type boolean",
				"test.toml:7: workload[0].capacity: wrong type: TOML value has type string; destination has type integer",
				"test.toml:9: workload[1].name: wrong type", "test.toml:10: workload[1].addresses: wrong type"}},
		{"wrong types in an embedded table's keys", "[node]\nname = 5\n[[remote_workload]]\nname = \"b\"\naddresses = \"10.0.0.9\"\n",
			[]string{"test.toml:2: node.name: wrong type", "test.toml:5: remote_workload[0].addresses: wrong type"}},
		{"syntax error", "[node\n", []string{"test.toml:2: expected"}},
		{"unknown key in second workload", "[[workload]]\nname = \"a\"\naddresses = [\"10.0.0.1\"]\n[[workload]]\nname = \"b\"\naddress = \"x\"\n",
			[]string{"test.toml:6: workload[1].address: unknown key"}},
		{"bad names", "[node]\nname = \"Bad_Name\"\ntrust_domain = \"Not A Domain\"\n",
			[]string{"test.toml:2: node.name: \"Bad_Name\" is not a DNS label", "test.toml:3: node.trust_domain: "}},
		{"bad addresses", "[[workload]]\nname = \"a\"\naddresses = [\n  \"10.0.0.1\",\n  \"nope\",\n  \"127.0.0.1\",\n]\n[[workload]]\nname = \"a\"\naddresses = [\"10.0.0.1\"]\n",
			[]string{"test.toml:3: workload[0].addresses[1]: \"nope\" is not an IP address",
				"test.toml:3: workload[0].addresses[2]: 127.0.0.1 cannot be a workload address",
				"test.toml:10: workload[1].addresses[0]: 10.0.0.1 is already used by workload[0]",
				"test.toml:9: workload[1].name: \"a\" in namespace \"default\" is already declared by workload[0]"}},
		{"remote address taken and bad tunnel", "[[workload]]\nname = \"a\"\naddresses = [\"10.0.0.1\"]\n[[remote_workload]]\nname = \"b\"\naddresses = [\"10.0.0.1\"]\ntunnel = \"gre\"\n",
			[]string{"test.toml:6: remote_workload[0].addresses[0]: 10.0.0.1 is already used by workload[0]", "test.toml:7: remote_workload[0].tunnel: \"gre\" is not one of"}},
		{"missing workload fields", "[[workload]]\nnamespace = \"x\"\n",
			[]string{"test.toml:1: workload[0].addresses: at least one address is required", "test.toml:1: workload[0].name: is required"}},
		{"bad cidr and ports", "[capture]\nexclude_cidrs = [\"10.0.0.0/33\", \"10.0.0.1/8\"]\nexclude_inbound_ports = [0, 70000]\nmark = 0\n",
			[]string{"capture.exclude_cidrs[0]: \"10.0.0.0/33\" is not a CIDR", "capture.exclude_cidrs[1]: \"10.0.0.1/8\" has host bits set",
				"capture.exclude_inbound_ports[0]: 0 is not a port", "capture.exclude_inbound_ports[1]: 70000 is not a port",
				"test.toml:4: capture.mark: 0 is not a non-zero 32-bit mark"}},
		{"inbound addresses", "[capture]\ninbound_addresses = \"some\"\nunmeshed_addresses = [\"10.0.0.0/8\", \"bogus\"]\n[[workload]]\nname = \"a\"\naddresses = [\"10.0.0.1\"]\n[limits]\nhandshakes = 0\n",
			[]string{"test.toml:2: capture.inbound_addresses: \"some\" is not \"all\" or \"workloads\"",
				"capture.unmeshed_addresses[1]: \"bogus\" is not a CIDR",
				"capture.unmeshed_addresses: 10.0.0.0/8 contains 10.0.0.1, an address of workload default/a",
				"limits.handshakes: 0 is not between 1 and 1048576"}},
		{"cluster id", "[node]\ncluster_id = \"-bad id\"\n",
			[]string{"test.toml:2: node.cluster_id: \"-bad id\" is not a cluster id"}},
		{"admin not loopback", "[admin]\naddress = \"0.0.0.0:15000\"\n",
			[]string{"test.toml:2: admin.address: 0.0.0.0:15000 is not a loopback address"}},
		{"admin on a data-path port", "[admin]\nmetrics_address = \"0.0.0.0:15008\"\n",
			[]string{"test.toml:2: admin.metrics_address: port 15008 is one of the agent's data-path ports"}},
		{"bad enum values", "[identity]\nsource = \"vault\"\n[log]\nlevel = \"loud\"\nformat = \"xml\"\n",
			[]string{"test.toml:2: identity.source: \"vault\" is not one of", "test.toml:4: log.level:", "test.toml:5: log.format:"}},
		{"bad gossip", "[gossip]\nbind = \"0.0.0.0:15008\"\njoin = [\"nohost\", \"a b:1\"]\nadvertise = \"0.0.0.0:7946\"\n",
			[]string{"test.toml:2: gossip.bind: port 15008 is one of the agent's own ports", "test.toml:3: gossip.join[0]:",
				"test.toml:3: gossip.join[1]:", "test.toml:4: gossip.advertise:"}},
		{"bad duration", "[node]\ndrain_timeout = \"soon\"\n", []string{"test.toml:2: node.drain_timeout: \"soon\" is not a duration"}},
		{"bad service", "[[workload]]\nname = \"a\"\naddresses = [\"10.0.0.1\"]\n[[service]]\nname = \"s\"\nvips = [\"10.0.0.1\"]\n" +
			"ports = [{ port = 80, target_port = 70000 }, { port = 0 }]\nworkloads = [\"b\"]\nuse_waypoint = \"a/b/c\"\n",
			[]string{"test.toml:6: service[0].vips[0]: 10.0.0.1 is already used by workload[0]",
				"test.toml:7: service[0].ports[0].target_port: 70000 is not a port",
				"test.toml:7: service[0].ports[1].port: 0 is not a port",
				"test.toml:8: service[0].workloads[0]: no [[workload]] named \"b\" in namespace \"default\"",
				"test.toml:9: service[0].use_waypoint: \"a/b/c\" is not"}},
		{"service without ports", "[[service]]\nname = \"s\"\n", []string{"test.toml:1: service[0].ports: at least one port is required"}},
		{"mark on the return path's bit", "[capture]\nmark = 0x2539\n", []string{"test.toml:2: capture.mark: 0x2539 shares a bit with the return path's mark 0x2000"}},
		{"bad health", "[[workload]]\nname = \"a\"\naddresses = [\"10.0.0.1\"]\n[workload.health]\nkind = \"icmp\"\nport = 0\ninterval = \"1s\"\ntimeout = \"2s\"\n",
			[]string{"test.toml:5: workload[0].health.kind: \"icmp\" is not one of", "test.toml:6: workload[0].health.port: 0 is not a port",
				"test.toml:8: workload[0].health.timeout: 2s must be positive and at most the interval (1s)"}},
		{"shared address", "[[workload]]\nname = \"a\"\naddresses = [\"10.0.0.1\"]\nports = [80, 81]\nuser = \"1001\"\n" +
			"[[workload]]\nname = \"b\"\naddresses = [\"10.0.0.1\"]\nports = [81]\nuser = \"1001\"\nunit = \"nope\"\ngroup = \"no-such-group-here\"\n" +
			"[capture]\nunmatched = \"drop\"\ndefault_workload = \"c\"\n",
			[]string{"workload[1].ports: port 81 on 10.0.0.1 is already served by workload \"a\"",
				"test.toml:6: workload[1]: uid 1001 already recognises workload \"a\"",
				"test.toml:11: workload[1].unit: \"nope\" is not a unit name",
				"test.toml:12: workload[1].group: \"no-such-group-here\" is neither a number nor known on this host",
				"test.toml:14: capture.unmatched: \"drop\" is not one of",
				"test.toml:15: capture.default_workload: no [[workload]] \"c\" on this host"}},
		{"bad waypoint and dns", "[[workload]]\nname = \"a\"\naddresses = [\"10.0.0.1\"]\n[waypoint]\nenabled = true\naddresses = [\"10.0.0.1\"]\n" +
			"[dns]\nlisten = \"10.0.0.1:53\"\n[policy]\nwaypoint_enforcement = \"strict\"\n",
			[]string{"test.toml:6: waypoint.addresses[0]: 10.0.0.1 is already used by workload[0]; a waypoint needs an address of its own",
				"test.toml:8: dns.listen: 10.0.0.1:53 is not a loopback address",
				"test.toml:10: policy.waypoint_enforcement: \"strict\" is not one of"}},
		{"bad gateway", "[node]\nnetwork = \"net-a\"\n[[workload]]\nname = \"a\"\naddresses = [\"10.0.0.1\"]\n[gateway]\nenabled = true\n" +
			"network = \"net-b\"\nnamespace = \"Not_A_Label\"\naddresses = [\"10.0.0.1\", \"bogus\"]\n",
			[]string{"gateway.network: \"net-b\" is not this host's network (node.network \"net-a\")",
				"gateway.namespace: \"Not_A_Label\" is not a DNS label",
				"gateway.addresses[0]: 10.0.0.1 is already used by workload[0]; a gateway needs an address of its own",
				"gateway.addresses[1]"}},
		{"gateway without a network or addresses", "[gateway]\nenabled = true\n",
			[]string{"gateway.network: a gateway serves a network", "gateway.addresses: at least one address"}},
		{"gateway table not enabled", "[gateway]\naddresses = [\"10.0.0.9\"]\n",
			[]string{"gateway.enabled: the [gateway] table is set but not enabled"}},
		{"bad gateway identities", "[gossip]\ngateway_identities = [\"istio-system\", \"ns/sa\", \"Bad/x\"]\n",
			[]string{"gossip.gateway_identities[0]: \"istio-system\" is not namespace/service_account",
				"gossip.gateway_identities[2]: \"Bad/x\" is not namespace/service_account"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := problems(t, tc.src)
			joined := strings.Join(got, "\n")
			for _, w := range tc.want {
				if !strings.Contains(joined, w) {
					t.Errorf("problems do not contain %q:\n%s", w, joined)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("got %d problems, want %d:\n%s", len(got), len(tc.want), joined)
			}
		})
	}
}

func TestSharedAddressAndProcesses(t *testing.T) {
	cfg, err := Parse("t.toml", []byte(`
[[workload]]
name = "alice"
addresses = ["10.0.0.1"]
ports = [8081]
user = "2001"
[[workload]]
name = "bob"
addresses = ["10.0.0.1"]
ports = [8082]
group = "0"
unit = "bob.service"
[capture]
unmatched = "passthrough"
default_workload = "alice"
`))
	if err != nil {
		t.Fatal(err)
	}
	a, b := cfg.Workloads[0].Processes, cfg.Workloads[1].Processes
	if a.UID == nil || *a.UID != 2001 || b.GID == nil || *b.GID != 0 || b.Cgroup != "system.slice/bob.service" {
		t.Errorf("process matches: %+v %+v", a, b)
	}
	if cfg.Capture.Unmatched != UnmatchedPassthrough || cfg.Capture.DefaultWorkload != "default/alice" {
		t.Errorf("capture: %+v", cfg.Capture)
	}
	if got := b.String(); got != "group 0 (gid 0), unit bob.service (cgroup system.slice/bob.service)" {
		t.Errorf("String() = %q", got)
	}
}

func TestDiff(t *testing.T) {
	a := mustParse(t, "[node]\nname = \"a\"\n")
	b := mustParse(t, "[node]\nname = \"a\"\n[log]\nlevel = \"debug\"\n")
	c := mustParse(t, "[node]\nname = \"b\"\n")
	if d := Diff(a, a); len(d) != 0 {
		t.Errorf("Diff(a, a) = %v", d)
	}
	if d := Diff(a, b); strings.Join(d, ",") != "log.level" {
		t.Errorf("Diff(a, b) = %v", d)
	}
	if d := Diff(a, c); strings.Join(d, ",") != "node" {
		t.Errorf("Diff(a, c) = %v", d)
	}
	if d := Diff(a, mustParse(t, "[node]\nname = \"a\"\n[log]\nformat = \"json\"\n")); strings.Join(d, ",") != "log.format" {
		t.Errorf("a log format change: Diff = %v", d)
	}
}

func TestKeyLines(t *testing.T) {
	src := "a = 1\n[t]\n\"q.k\" = 2\nx.y = 3 # c\nmulti = \"\"\"\nz = 4\n\"\"\"\n[[arr]]\nb = 1\n[arr.sub]\nc = 2\n[[arr]]\nb = 2\n"
	kl := indexKeyLines(src)
	for path, line := range map[string]int{
		"a": 1, "t": 2, "t.q.k": 3, "t.x.y": 4, "t.multi": 5, "arr[0].b": 9, "arr[0].sub.c": 11,
		"arr[1].b": 13, "arr[1].nothing": 12, "t.z": 2,
	} {
		if got := kl.Lookup(path); got != line {
			t.Errorf("Lookup(%q) = %d, want %d", path, got, line)
		}
	}
}

// Istio's cluster ids are label values: its default, "Kubernetes", has capitals.
func TestClusterIDIsALabelValue(t *testing.T) {
	for id, ok := range map[string]bool{
		"Kubernetes": true, "cluster-1": true, "my_cluster.eu": true, "a": true,
		"-x": false, "x-": false, "with space": false, strings.Repeat("a", 64): false,
	} {
		if got := IsLabelValue(id); got != ok {
			t.Errorf("IsLabelValue(%q) = %v, want %v", id, got, ok)
		}
	}
}
