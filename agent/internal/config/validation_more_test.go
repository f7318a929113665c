package config

import (
	"strings"
	"testing"
)

// TestRuntimeRulesAreValidated: values that the agent refuses at start, or that
// misbehave at run time, are refused by validation with the key and line.
func TestRuntimeRulesAreValidated(t *testing.T) {
	const node = "[node]\nname = \"n\"\n"
	const workload = "[[workload]]\nname = \"a\"\naddresses = [\"10.0.0.5\"]\n"
	for _, tc := range []struct {
		name, src, want string
	}{
		// app.newIstiod: "istio: discovery needs a local workload or waypoint to authenticate to istiod as".
		{"istio discovery without a workload or waypoint",
			node + "[istio]\nenabled = true\naddress = \"istiod.istio-system.svc:15012\"\n",
			"test.toml:3: istio.discovery: needs a local [[workload]] or an enabled [waypoint]"},
		// The proxy would forward every non-mesh query to itself (dns/upstream_self_test.go).
		{"dns upstream is the proxy itself",
			node + "[dns]\nlisten = \"127.0.0.1:15053\"\nupstreams = [\"127.0.0.1:15053\"]\n",
			"test.toml:5: dns.upstreams[0]: 127.0.0.1:15053 is the DNS proxy's own address"},
		{"dns upstream is the proxy, IPv4-mapped",
			node + "[dns]\nupstreams = [\"192.0.2.53\", \"[::ffff:127.0.0.1]:15053\"]\n",
			"test.toml:4: dns.upstreams[1]: [::ffff:127.0.0.1]:15053 is the DNS proxy's own address"},
		{"dns upstream is the proxy's IPv6 listen with capture",
			node + "[dns]\ncapture = true\nupstreams = [\"[::1]:15053\"]\n",
			"test.toml:5: dns.upstreams[0]: [::1]:15053 is the DNS proxy's own address"},
		// state ranks what node "istiod" declares as istiod's.
		{"node named istiod", "[node]\nname = \"istiod\"\n",
			"test.toml:2: node.name: \"istiod\" is reserved"},
		// The endpoint would get twice the traffic (state.PickEndpoint weights per endpoint).
		{"service lists a workload twice",
			node + workload + "[[service]]\nname = \"s\"\nports = [{ port = 80, target_port = 8080 }]\nworkloads = [\"a\", \"a\"]\n",
			"test.toml:9: service[0].workloads[1]: workload \"a\" is listed twice"},
		// The workload serves only 8080; traffic for 9090 would go to the address's primary workload.
		{"service target port the workload does not serve",
			node + workload + "ports = [8080]\n" + "[[workload]]\nname = \"b\"\naddresses = [\"10.0.0.5\"]\nports = [9090]\n" +
				"[[service]]\nname = \"s\"\nports = [{ port = 80, target_port = 9090 }]\nworkloads = [\"a\"]\n",
			"test.toml:14: service[0].workloads[0]: workload \"a\" lists ports [8080] but not 9090"},
		{"service port without target_port, on an address whose first workload is another",
			node + "[[workload]]\nname = \"b\"\naddresses = [\"10.0.0.5\"]\nports = [9090]\n" + workload + "ports = [8080]\n" + "[[service]]\nname = \"s\"\nports = [{ port = 80 }]\nworkloads = [\"a\"]\n",
			"workload \"a\" lists ports [8080] but not 80, the target port of service port 80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := problems(t, tc.src)
			if !strings.Contains(strings.Join(ps, "\n"), tc.want) {
				t.Errorf("problems:\n%s\nwant one containing %q", strings.Join(ps, "\n"), tc.want)
			}
		})
	}
}

// TestRuntimeRulesAreNotTooStrict: what works at run time stays valid.
func TestRuntimeRulesAreNotTooStrict(t *testing.T) {
	const node = "[node]\nname = \"n\"\n"
	const workload = "[[workload]]\nname = \"a\"\naddresses = [\"10.0.0.5\"]\n"
	for name, src := range map[string]string{
		"istio discovery with a workload": node + workload +
			"[istio]\nenabled = true\naddress = \"istiod.istio-system.svc:15012\"\n",
		"istio discovery with a waypoint": node +
			"[waypoint]\nenabled = true\naddresses = [\"10.0.0.20\"]\n[istio]\nenabled = true\naddress = \"istiod.istio-system.svc:15012\"\n",
		"istio for identities only, no discovery": node +
			"[identity]\nsource = \"istio\"\n[istio]\nenabled = true\naddress = \"istiod.istio-system.svc:15012\"\ndiscovery = false\n",
		"dns upstreams on other loopback addresses or ports": node +
			"[dns]\ncapture = true\nupstreams = [\"127.0.0.53\", \"127.0.0.1:53\", \"127.0.0.2:15053\", \"[::1]:53\"]\n",
		"dns upstream [::1] on the proxy's port without capture": node +
			"[dns]\nupstreams = [\"[::1]:15053\"]\n",
		"a lone workload serves every port of its address, listed or not": node + workload + "ports = [8080]\n" +
			"[[service]]\nname = \"s\"\nports = [{ port = 80, target_port = 9090 }]\nworkloads = [\"a\"]\n",
		"the first workload of a shared address gets the ports no one lists": node + workload + "ports = [8080]\n" + "[[workload]]\nname = \"b\"\naddresses = [\"10.0.0.5\"]\nports = [9090]\n" +
			"[[service]]\nname = \"s\"\nports = [{ port = 80 }]\nworkloads = [\"a\"]\n",
		"workload without ports serves every target port": node + workload +
			"[[service]]\nname = \"s\"\nports = [{ port = 80, target_port = 9090 }, { port = 81 }]\nworkloads = [\"a\"]\n",
		"workload lists every target port": node + workload + "ports = [8080, 80]\n" +
			"[[service]]\nname = \"s\"\nports = [{ port = 80 }, { port = 81, target_port = 8080 }]\nworkloads = [\"a\"]\n",
	} {
		t.Run(name, func(t *testing.T) {
			mustParse(t, src)
		})
	}
}

// Hairpin is opt-in (the default is policy, as ztunnel), needs a dedicated
// identity no workload or waypoint of the host has, and with [istio] an
// explicit hairpin_with_istio; its settings mean nothing under policy.
func TestHairpinEnforcement(t *testing.T) {
	const node = "[node]\nname = \"n\"\n"
	const workload = "[[workload]]\nname = \"a\"\nservice_account = \"app\"\naddresses = [\"10.0.0.5\"]\n"
	const istio = "[istio]\nenabled = true\naddress = \"istiod.istio-system.svc:15012\"\n"
	cfg, ps := Parse("test.toml", []byte(node+workload))
	if ps != nil || cfg.Policy.WaypointEnforcement != EnforcePolicy || cfg.Policy.Hairpin != nil {
		t.Fatalf("default: %v %+v, want policy and no hairpin identity", ps, cfg.Policy)
	}
	cfg, ps = Parse("test.toml", []byte(node+workload+"[policy]\nwaypoint_enforcement = \"hairpin\"\nhairpin_service_account = \"hairpin\"\n"))
	if ps != nil || cfg.Policy.Hairpin == nil || *cfg.Policy.Hairpin != (HairpinIdentity{Namespace: "default", ServiceAccount: "hairpin"}) {
		t.Fatalf("hairpin: %v %+v", ps, cfg.Policy.Hairpin)
	}
	// A configuration from before hairpin identities still starts, closed: its
	// hairpinned callers are refused, and a warning says so.
	cfg, ps = Parse("test.toml", []byte(node+workload+"[policy]\nwaypoint_enforcement = \"hairpin\"\n"))
	if ps != nil || cfg.Policy.Hairpin != nil || len(cfg.Warnings()) != 1 || !strings.Contains(cfg.Warnings()[0], "plaintext callers of local workloads with their own waypoint are refused") {
		t.Fatalf("hairpin without an identity: %v, warnings %q", ps, cfg.Warnings())
	}
	cfg, ps = Parse("test.toml", []byte(node+workload+istio+"[policy]\nwaypoint_enforcement = \"hairpin\"\nhairpin_service_account = \"hairpin\"\nhairpin_with_istio = true\n"))
	if ps != nil || cfg.Policy.Hairpin == nil {
		t.Fatalf("hairpin forced with istio: %v", ps)
	}
	for _, tc := range []struct{ name, src, want string }{
		{"hairpin as a workload's identity", node + workload + "[policy]\nwaypoint_enforcement = \"hairpin\"\nhairpin_service_account = \"app\"\n",
			"policy.hairpin_service_account: default/app is the identity of workload a"},
		{"hairpin as the waypoint's identity", node + "[waypoint]\nenabled = true\naddresses = [\"10.0.0.20\"]\n" +
			"[policy]\nwaypoint_enforcement = \"hairpin\"\nhairpin_service_account = \"waypoint\"\n",
			"policy.hairpin_service_account: default/waypoint is the identity of this host's waypoint"},
		{"hairpin with istio", node + workload + istio + "[policy]\nwaypoint_enforcement = \"hairpin\"\nhairpin_service_account = \"hairpin\"\n",
			"policy.waypoint_enforcement: \"hairpin\" refuses the HBONE callers Istio lets bypass a waypoint"},
		{"hairpin settings under policy", node + workload + "[policy]\nhairpin_service_account = \"hairpin\"\n",
			"policy.hairpin_service_account: the hairpin settings apply only with waypoint_enforcement = \"hairpin\""},
		{"bad hairpin names", node + workload + "[policy]\nwaypoint_enforcement = \"hairpin\"\nhairpin_namespace = \"Bad_NS\"\nhairpin_service_account = \"x\"\n",
			"policy.hairpin_namespace: \"Bad_NS\" is not a DNS label"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := problems(t, tc.src)
			if !strings.Contains(strings.Join(ps, "\n"), tc.want) {
				t.Errorf("problems:\n%s\nwant one containing %q", strings.Join(ps, "\n"), tc.want)
			}
		})
	}
}
