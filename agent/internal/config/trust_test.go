package config

import (
	"net/netip"
	"strings"
	"testing"
)

const gossipBase = `
[node]
name = "vm-1"
[gossip]
enabled = true
key_file = "/etc/ambient-agent/gossip.key"
`

func TestGossipTrustKeys(t *testing.T) {
	cfg := mustParse(t, gossipBase+`accept_unsigned = true
require_address_proof = true
allowed_hostnames = ["Corp.Example.com."]
allowed_vips = ["10.96.0.0/12"]
[[workload]]
name = "web"
addresses = ["10.0.0.5"]
[[service]]
name = "web"
hostname = "web.corp.example.com"
vips = ["10.96.0.10"]
ports = [{ port = 80 }]
workloads = ["web"]
service_accounts = ["default", "web-v2"]
`)
	g := cfg.Gossip
	if !g.AcceptUnsigned || !g.RequireAddressProof || len(g.AllowedHostnames) != 1 || g.AllowedHostnames[0] != "corp.example.com" ||
		len(g.AllowedVIPs) != 1 || g.AllowedVIPs[0] != netip.MustParsePrefix("10.96.0.0/12") {
		t.Errorf("gossip: %+v", g)
	}
	if sas := cfg.Services[0].ServiceAccounts; len(sas) != 2 || sas[1] != "web-v2" {
		t.Errorf("service accounts: %v", sas)
	}
}

// What peers would refuse is refused here, with the key and the fix.
func TestGossipTrustProblems(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`allowed_vips = ["0.0.0.0/0"]`, "gossip.allowed_vips[0]: 0.0.0.0/0 would let peers capture"},
		{`allowed_vips = ["169.254.0.0/16"]`, "gossip.allowed_vips[0]: 169.254.0.0/16 would let peers capture"},
		{`allowed_vips = ["10.96.0.0"]`, `gossip.allowed_vips[0]: "10.96.0.0" is not a CIDR`},
		{`
[[workload]]
name = "web"
addresses = ["169.254.10.1"]`, "workload[0].addresses: 169.254.10.1 is link-local"},
		{`allowed_hostnames = ["not a domain"]`, `gossip.allowed_hostnames[0]: "not a domain" is not a DNS domain`},
		{`
[[workload]]
name = "web"
addresses = ["10.0.0.5"]
[[service]]
name = "web"
vips = ["10.96.0.10"]
ports = [{ port = 80 }]
workloads = ["web"]`, "service[0].vips[0]: 10.96.0.10 is outside the allocation ranges"},
		{`
[[workload]]
name = "web"
addresses = ["10.0.0.5"]
[[service]]
name = "web"
hostname = "db.corp.example.com"
ports = [{ port = 80 }]
workloads = ["web"]`, `service[0].hostname: "db.corp.example.com" is outside [dns] domains`},
		{`
[[workload]]
name = "web"
addresses = ["10.0.0.5"]
[[service]]
name = "web"
ports = [{ port = 80 }]
workloads = ["web"]
service_accounts = ["Not_A_Name"]`, `service[0].service_accounts[0]: "Not_A_Name" is not a DNS name`},
	} {
		got := strings.Join(problems(t, gossipBase+tc.src), "\n")
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s:\ngot  %s\nwant %s", tc.src, got, tc.want)
		}
	}
}
