package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

const telemetryServer = `
[[workload]]
name = "web-7d9f"
service_account = "web"
addresses = [%q]
labels = { app = "web", version = "v2", "service.istio.io/workload-name" = "web" }
[[service]]
name = "web"
ports = [{ port = 80, target_port = 8080 }]
workloads = ["web-7d9f"]
`

const telemetryClient = `
[[workload]]
name = "sleep"
service_account = "sleep"
addresses = [%q]
labels = { "service.istio.io/canonical-name" = "sleeper", "service.istio.io/canonical-revision" = "r1" }
`

// Every label of spec/telemetry.md, on both agents, after one connection to a
// service: the values ztunnel reports (the workload name, never an instance's;
// the canonical service and revision as app and version; the service on the
// destination side too, from forwarded's host=; locality where the agent knows
// it). Then a long transfer shows its bytes at every scrape while it runs.
func TestTelemetryLabels(t *testing.T) {
	lab.Require(t, "nginx", "curl", "nc")
	l := lab.New(t, 2)
	client, server := l.Hosts[0], l.Hosts[1]
	for _, h := range l.Hosts {
		h.DefaultRoute()
	}
	key := gossipKey(t, l)
	server.StartNginx("hello from web", 8080)
	client.Issue(agentBin, "default", "sleep")
	server.Issue(agentBin, "default", "web")
	// A sink that reads until the client stops.
	server.Start("sink", "bash", "-c", "exec nc -lk 9000 > /dev/null")
	// In the cluster, with the host's locality.
	node := func(h *lab.Host, locality, body string) string {
		return lab.AgentConfig{Host: h, Node: fmt.Sprintf("cluster_id = \"lab-cluster\"\nlocality = %q", locality),
			Gossip: &lab.Gossip{KeyFile: key, Seed: client}, Tables: body}.String()
	}
	serverAgent := server.StartAgent(agentBin, node(server, "eu/eu-1", fmt.Sprintf(telemetryServer, server.Addr)))
	clientAgent := client.StartAgent(agentBin, node(client, "us/us-2", fmt.Sprintf(telemetryClient, client.Addr)))
	serverAgent.WaitReady(t, 20*time.Second)
	clientAgent.WaitReady(t, 20*time.Second)
	m := waitMesh(t, clientAgent, 30*time.Second, "the web service", func(m meshDump) bool { return m.serviceVIP("web") != "" })
	waitMesh(t, serverAgent, 30*time.Second, "the client's workload", func(m meshDump) bool { return len(m.Workloads) == 2 })
	mustCurl(t, client, fmt.Sprintf("http://%s:80/", m.serviceVIP("web")), "hello from web")
	clientAgent.WaitLog(t, "direction=outbound", 5*time.Second)
	serverAgent.WaitLog(t, "direction=inbound ", 5*time.Second)

	common := map[string]string{
		"source_workload": "sleep", "source_canonical_service": "sleeper", "source_canonical_revision": "r1",
		"source_workload_namespace": "default", "source_principal": "spiffe://cluster.local/ns/default/sa/sleep",
		"source_app": "sleeper", "source_version": "r1", "source_cluster": "lab-cluster",
		"destination_service": "web.default.svc.cluster.local", "destination_service_name": "web",
		"destination_service_namespace": "default",
		"destination_workload":          "web", "destination_canonical_service": "web", "destination_canonical_revision": "v2",
		"destination_workload_namespace": "default", "destination_principal": "spiffe://cluster.local/ns/default/sa/web",
		"destination_app": "web", "destination_version": "v2", "destination_cluster": "lab-cluster",
		"request_protocol": "tcp", "response_flags": "-", "connection_security_policy": "mutual_tls",
		// Each host's locality and cluster, its own from its [node], its peer's from gossip.
		"source_region": "us", "source_zone": "us-2", "destination_region": "eu", "destination_zone": "eu-1",
	}
	sides := []struct {
		host   *lab.Host
		labels map[string]string
	}{{client, map[string]string{"reporter": "source"}}, {server, map[string]string{"reporter": "destination"}}}
	for _, side := range sides {
		for k, v := range common {
			side.labels[k] = v
		}
		metrics := scrape(t, side.host)
		if n, ok := metricValue(t, metrics, "istio_tcp_connections_opened_total", side.labels); !ok || n != 1 {
			t.Errorf("%s: no istio_tcp_connections_opened_total with every label of telemetry.md (%v):\n%s",
				side.host.Name, side.labels, grepIstio(metrics))
		}
		if got := labelCount(metrics, "istio_tcp_connections_opened_total"); got != len(side.labels) {
			t.Errorf("%s: the series has %d labels, telemetry.md lists %d", side.host.Name, got, len(side.labels))
		}
		for _, name := range []string{"istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total", "istio_tcp_connections_closed_total"} {
			if n, ok := metricValue(t, metrics, name, side.labels); !ok || n == 0 {
				t.Errorf("%s: %s = %v, %v", side.host.Name, name, n, ok)
			}
		}
		if v, ok := metricValue(t, metrics, "istio_build", map[string]string{"component": "ztunnel", "tag": "1.31.1"}); !ok || v != 1 {
			t.Errorf("%s: istio_build{component=ztunnel,tag=1.31.1} missing", side.host.Name)
		}
	}

	// A long transfer to the server's address (no service: destination_service
	// unknown): its bytes count while it runs, on both sides.
	xfer := client.Start("transfer", "bash", "-c", fmt.Sprintf("exec nc %s 9000 < /dev/zero", server.Addr))
	defer xfer.Kill()
	live := map[string]string{"destination_service": "unknown", "destination_workload": "web", "response_flags": "-"}
	bytesOf := func(h *lab.Host, reporter string) (received, closed float64) {
		labels := map[string]string{"reporter": reporter}
		for k, v := range live {
			labels[k] = v
		}
		metrics := scrape(t, h)
		received, _ = metricValue(t, metrics, "istio_tcp_received_bytes_total", labels)
		closed, _ = metricValue(t, metrics, "istio_tcp_connections_closed_total", labels)
		return received, closed
	}
	for _, side := range []struct {
		host     *lab.Host
		reporter string
	}{{client, "source"}, {server, "destination"}} {
		var first float64
		deadline := time.Now().Add(10 * time.Second)
		for first == 0 && time.Now().Before(deadline) {
			first, _ = bytesOf(side.host, side.reporter)
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(time.Second)
		second, closed := bytesOf(side.host, side.reporter)
		if first == 0 || second <= first || closed != 0 {
			t.Errorf("%s (%s): received bytes %v then %v a second later, %v closed: want them growing while the connection is open",
				side.host.Name, side.reporter, first, second, closed)
		}
	}
	if xfer.Exited() {
		t.Fatalf("the transfer ended early:\n%s", xfer.Log())
	}
}

// labelCount is the number of labels of the first sample of name.
func labelCount(metrics, name string) int {
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, name+"{") {
			return strings.Count(line[:strings.LastIndex(line, "}")], `="`)
		}
	}
	return 0
}
