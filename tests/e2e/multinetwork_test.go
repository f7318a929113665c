package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// TestServiceAcrossNetworks: h1 runs a client on network net-a; h3 runs the echo service on net-b, at an address
// only net-b routes (10.78.0.13); h2 is net-b's east-west gateway, on both the transit bridge (where h1 reaches
// it) and net-b. The client reaches the service by its VIP and by name only through the gateway, by double HBONE:
// on the transit only HBONE to the gateway, never the destination's address; the destination sees and authorizes
// the client's own identity (in its log and metrics, as the client's metrics do), so a DENY for it refuses it
// there, not at the gateway. Then h4 adds an endpoint on net-a, with a third of net-b's capacity, and a workload at
// net-b's echo address on net-a: connections spread over both networks by capacity, and that address is net-a's
// workload's for the client while the service still reaches net-b's endpoint there.
func TestServiceAcrossNetworks(t *testing.T) {
	lab.Require(t, "nginx", "curl", "tcpdump")
	l := lab.New(t, 4)
	client, gw, dest, local := l.Hosts[0], l.Hosts[1], l.Hosts[2], l.Hosts[3]
	netB := l.AddNetwork("netb", netip.MustParsePrefix("10.78.0.0/24"), gw, dest)
	echoAddr := netB[1]
	client.DefaultRoute()
	dest.StartNginx("echo from net-b", 8080)
	client.Issue(agentBin, "default", "client")
	gw.Issue(agentBin, "istio-system", "istio-eastwestgateway")
	dest.Issue(agentBin, "default", "echo")
	local.Issue(agentBin, "default", "echo")
	key := gossipKey(t, l)
	policies := filepath.Join(dest.Dir, "policies")
	if err := os.MkdirAll(policies, 0o755); err != nil {
		t.Fatal(err)
	}
	start := func(h *lab.Host, network, body string) *lab.Agent {
		a := h.StartAgent(agentBin, lab.AgentConfig{Host: h, Node: fmt.Sprintf("network = %q", network),
			Gossip: &lab.Gossip{KeyFile: key, Seed: client}, Tables: body}.String())
		a.WaitReady(t, 20*time.Second)
		return a
	}
	client.SetResolvConf("nameserver 192.0.2.53\n")
	clientAgent := start(client, "net-a", fmt.Sprintf(`[[workload]]
name = "client"
service_account = "client"
addresses = [%q]
[dns]
capture = true
upstreams = ["192.0.2.53"]
`, client.Addr))
	gwAgent := start(gw, "net-b", fmt.Sprintf("[gateway]\nenabled = true\naddresses = [%q]\n", gw.Addr))
	echoBody := `[[workload]]
name = "echo"
service_account = "echo"
addresses = [%q]
capacity = %d
%s
[[service]]
name = "echo"
ports = [{ port = 80, target_port = 8080 }]
workloads = ["echo"]
[policy]
dir = %q
`
	destAgent := start(dest, "net-b", fmt.Sprintf(echoBody, echoAddr, 3, "", policies))

	// The client cannot reach the destination's address itself.
	if out, err := curl(client, fmt.Sprintf("http://%s:8080/", echoAddr)); err == nil {
		t.Fatalf("net-a reaches net-b's address directly (%q): the lab is not two networks", out)
	}
	var vip string
	waitMesh(t, clientAgent, gossipConverges, "the service and net-b's gateway known", func(m meshDump) bool {
		vip = m.serviceVIP("echo")
		return vip != "" && len(m.Gateways) == 1 && m.Gateways[0].Network == "net-b"
	})
	waitMesh(t, gwAgent, gossipConverges, "the gateway knows the service", func(m meshDump) bool { return m.serviceVIP("echo") != "" })

	stop := l.Capture("transit", client)
	mustCurl(t, client, fmt.Sprintf("http://%s:80/", vip), "echo from net-b")
	pcap := l.PcapSummary(stop())
	packets := 0
	for _, line := range strings.Split(strings.TrimSpace(pcap), "\n") {
		if !strings.Contains(line, " IP ") || strings.Contains(line, ".7946") { // tcpdump's header; gossip
			continue
		}
		packets++
		if strings.Contains(line, echoAddr.String()) || !strings.Contains(line, gw.Addr.String()+".15008") {
			t.Errorf("on the transit, a packet other than HBONE to the gateway: %s", line)
		}
	}
	if packets == 0 {
		t.Errorf("no packet to the gateway on the transit:\n%s", pcap)
	}
	mustCurl(t, client, "http://echo.default.svc.cluster.local/", "echo from net-b") // by name
	clientID := "spiffe://cluster.local/ns/default/sa/client"
	waitCount(t, gwAgent, 1, 5*time.Second, "msg=access", "route=gateway", "src_identity="+clientID,
		"dst_service=echo.default.svc.cluster.local", "response_flags=-")
	waitCount(t, destAgent, 1, 5*time.Second, "msg=access", "direction=inbound", "route=hbone", "src_identity="+clientID,
		"dst_service=echo.default.svc.cluster.local", "response_flags=-")
	if v, ok := metricValue(t, scrape(t, dest), "istio_tcp_connections_opened_total", map[string]string{
		"destination_service": "echo.default.svc.cluster.local", "source_principal": clientID, "source_workload": "client"}); !ok || v < 2 {
		t.Errorf("the destination's metrics do not show the client (its identity and workload) on both connections")
	}
	if v, ok := metricValue(t, scrape(t, client), "istio_tcp_connections_opened_total", map[string]string{"reporter": "source",
		"destination_service": "echo.default.svc.cluster.local", "source_principal": clientID,
		"destination_principal": "spiffe://cluster.local/ns/default/sa/echo"}); !ok || v < 2 {
		t.Errorf("the client's metrics do not show both connections with both identities")
	}

	// A second endpoint of the service on the client's own network, with capacity 1 against net-b's 3: connections
	// spread over both networks by capacity, the local endpoint reached directly, the remote one through the
	// gateway. On the same host, a workload of net-a at net-b's echo address (routed to h4 from the client).
	local.StartNginx("echo from net-a", 8080)
	local.MustRun("ip", "addr", "add", echoAddr.String()+"/32", "dev", "lo")
	client.MustRun("ip", "route", "add", echoAddr.String()+"/32", "via", local.Addr.String())
	overlap := fmt.Sprintf("[[workload]]\nname = \"overlap\"\nservice_account = \"echo\"\naddresses = [%q]\n", echoAddr)
	start(local, "net-a", fmt.Sprintf(echoBody, local.Addr, 1, overlap, filepath.Join(local.Dir, "policies")))
	waitMesh(t, clientAgent, gossipConverges, "the service's endpoints on both networks", func(m meshDump) bool {
		for _, s := range m.Services {
			if s.Name == "echo" {
				return len(s.Endpoints) == 2
			}
		}
		return false
	})
	seen := map[string]int{}
	for range 40 {
		out, err := curl(client, fmt.Sprintf("http://%s:80/", vip))
		if err != nil {
			t.Fatalf("the service with endpoints on both networks: %v", err)
		}
		seen[strings.TrimSpace(out)]++
	}
	// Capacity 3 to 1: 30 of 40 expected on net-b (sd 2.7); outside 22..38 is a failure of the weighting.
	if seen["echo from net-b"] < 22 || seen["echo from net-b"] > 38 || seen["echo from net-a"] == 0 || len(seen) != 2 {
		t.Errorf("40 connections went %v, want about 30 to net-b (capacity 3) and 10 to net-a (capacity 1)", seen)
	}
	// The overlapping address is net-a's workload's for the client, with no conflict on either network.
	mustCurl(t, client, fmt.Sprintf("http://%s:8080/", echoAddr), "echo from net-a")
	for _, a := range []*lab.Agent{clientAgent, gwAgent, destAgent} {
		if m, err := readMesh(a); err != nil || len(m.Conflicts) > 0 {
			t.Errorf("%s: address conflicts %+v (%v), want none: the two workloads are on two networks", a.Host.Name, m.Conflicts, err)
		}
	}

	// A DENY for the client at the destination refuses it there: the gateway relays, the destination answers 401.
	deny := `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-client, namespace: default}
spec:
  action: DENY
  rules: [{from: [{source: {principals: ["cluster.local/ns/default/sa/client"]}}]}]
`
	if err := os.WriteFile(filepath.Join(policies, "deny.yaml"), []byte(deny), 0o644); err != nil {
		t.Fatal(err)
	}
	destAgent.Reload(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := curl(client, fmt.Sprintf("http://%s:80/", vip))
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client still reaches the service after the DENY: %q", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitCount(t, destAgent, 1, 5*time.Second, "msg=access", "src_identity="+clientID, "response_flags=DENY")
	// The gateway relayed both tunnels to their end, the refused one too: the refusal is the destination's.
	waitCount(t, gwAgent, 3+seen["echo from net-b"], 5*time.Second, "msg=access", "route=gateway")
	if all, clean := countLines(gwAgent.Log(), "msg=access", "route=gateway"), countLines(gwAgent.Log(), "msg=access", "route=gateway", "response_flags=-"); clean != all {
		t.Errorf("the gateway recorded %d of its %d tunnels as failed:\n%s", all-clean, all, gwAgent.Log())
	}
}
