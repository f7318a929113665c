package lab

import (
	"net/netip"
	"strings"
	"testing"
)

// The builder writes what the scenarios used to write by hand: a host's [node] and [identity], gossip joining the
// seed (never the host itself), the host's workloads and its peers', then the scenario's own tables.
func TestAgentConfigRenders(t *testing.T) {
	h1 := &Host{Name: "h1", Addr: netip.MustParseAddr("10.77.0.11"), Dir: "/tmp/lab/h1"}
	h2 := &Host{Name: "h2", Addr: netip.MustParseAddr("10.77.0.12"), Dir: "/tmp/lab/h2"}
	c := AgentConfig{Host: h1, Node: `locality = "eu/eu-1"`, Gossip: &Gossip{KeyFile: "/k", Seed: h2, Keys: "accept_unsigned = true"},
		Capture: `unmatched = "passthrough"`, Workloads: []Workload{h1.App("web")}, Remote: []Remote{h2.RemoteApp("")},
		Tables: "[log]\nlevel = \"debug\""}
	want := `[node]
name = "h1"
drain_timeout = "2s"
locality = "eu/eu-1"
[identity]
dir = "` + h1.IdentityDir() + `"
[gossip]
enabled = true
join = ["10.77.0.12:7946"]
key_file = "/k"
grace_period = "2s"
accept_unsigned = true
[capture]
unmatched = "passthrough"
[[workload]]
name = "app-h1"
addresses = ["10.77.0.11"]
service_account = "web"
[[remote_workload]]
name = "app-h2"
addresses = ["10.77.0.12"]
node = "h2"
[log]
level = "debug"
`
	if got := c.String(); got != want {
		t.Errorf("rendered:\n%s\nwant:\n%s", got, want)
	}
	c = AgentConfig{Host: h1, Gossip: &Gossip{KeyFile: "/k", Seed: h1}}
	if got := c.String(); !strings.Contains(got, "join = []\n") {
		t.Errorf("the seed itself joins itself:\n%s", got)
	}
}
