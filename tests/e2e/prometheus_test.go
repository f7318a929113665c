package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// dashQuery is one PromQL expression of a dashboard panel and what it must return on the lab below.
type dashQuery struct {
	dashboard, panel, expr string
	// pods are the pod labels the result must hold (the ztunnel dashboard's per-instance series); labels are
	// label=value pairs some series must carry; empty says the result must be empty, and why.
	pods   []string
	labels []string
	empty  string
}

// The variables of Istio's dashboards, as a user would pick them on this lab.
var dashVars = strings.NewReplacer(
	"$__rate_interval", "15s", "$qrep", "source|destination", "$namespace", "default",
	"$workload", "client|reviews-h2", "$srcwl", ".*", "$srcns", ".*", "$dstsvc", ".*", "$dstwl", ".*", "$dstns", ".*",
	"$service", "reviews.default.svc.cluster.local", "$node", ".*",
)

var both = []string{"ztunnel-h1", "ztunnel-h2"}

// istioQueries are the PromQL expressions of Istio's own dashboards (manifests/addons/dashboards of Istio 1.31):
// every panel of the ztunnel dashboard, and the TCP panels of the workload and service dashboards.
var istioQueries = []dashQuery{
	{"ztunnel", "Ztunnel Versions", `sum(istio_build{component="ztunnel"}) by (tag)`, nil, []string{"tag=1.31.1"}, ""},
	{"ztunnel", "Memory Usage", `sum by (pod) (container_memory_working_set_bytes{container="istio-proxy", pod=~"ztunnel-.*"})`, both, nil, ""},
	{"ztunnel", "CPU Usage", `sum by (pod) (irate(container_cpu_usage_seconds_total{container="istio-proxy", pod=~"ztunnel-.*"}[$__rate_interval]))`, both, nil, ""},
	{"ztunnel", "Connections", `sum by (pod) (rate(istio_tcp_connections_opened_total{pod=~"ztunnel-.*"}[$__rate_interval]))`, both, nil, ""},
	{"ztunnel", "Connections", `-sum by (pod) (rate(istio_tcp_connections_closed_total{pod=~"ztunnel-.*"}[$__rate_interval]))`, both, nil, ""},
	{"ztunnel", "Bytes Transmitted", `sum by (pod) (rate(istio_tcp_sent_bytes_total{pod=~"ztunnel-.*"}[$__rate_interval]))`, both, nil, ""},
	{"ztunnel", "Bytes Transmitted", `sum by (pod) (rate(istio_tcp_received_bytes_total{pod=~"ztunnel-.*"}[$__rate_interval]))`, both, nil, ""},
	{"ztunnel", "DNS Request", `sum by (pod) (rate(istio_dns_requests_total{pod=~"ztunnel-.*"}[$__rate_interval]))`, []string{"ztunnel-h1"}, nil, ""},
	{"ztunnel", "XDS", `sum by (pod) (rate(istio_xds_connection_terminations_total{pod=~"ztunnel-.*"}[$__rate_interval]))`, nil, nil, "no istiod in this lab: the agents have no xDS connection"},
	{"ztunnel", "Workload Manager", `sum by (pod) (workload_manager_active_proxy_count{pod=~"ztunnel-.*"})`, both, nil, ""},
	{"ztunnel", "Workload Manager", `sum by (pod) (workload_manager_pending_proxy_count{pod=~"ztunnel-.*"})`, both, nil, ""},

	{"workload", "TCP Server Traffic", `sum(irate(istio_tcp_sent_bytes_total{reporter=~"$qrep", destination_workload_namespace=~"$namespace", destination_workload=~"$workload"}[$__rate_interval])) + sum(irate(istio_tcp_received_bytes_total{reporter=~"$qrep", destination_workload_namespace=~"$namespace", destination_workload=~"$workload"}[$__rate_interval]))`, nil, nil, ""},
	{"workload", "TCP Client Traffic", `sum(irate(istio_tcp_sent_bytes_total{reporter=~"$qrep", source_workload_namespace=~"$namespace", source_workload=~"$workload"}[$__rate_interval])) + sum(irate(istio_tcp_received_bytes_total{reporter=~"$qrep", source_workload_namespace=~"$namespace", source_workload=~"$workload"}[$__rate_interval]))`, nil, nil, ""},
	{"workload", "Bytes Received from Incoming TCP Connection (mTLS)", `round(sum(irate(istio_tcp_received_bytes_total{reporter=~"$qrep", connection_security_policy="mutual_tls", destination_workload_namespace=~"$namespace", destination_workload=~"$workload", source_workload=~"$srcwl", source_workload_namespace=~"$srcns"}[$__rate_interval])) by (source_workload, source_workload_namespace), 0.001)`, nil, []string{"source_workload=client", "source_workload_namespace=default"}, ""},
	{"workload", "Bytes Received from Incoming TCP Connection (plaintext)", `round(sum(irate(istio_tcp_received_bytes_total{reporter=~"$qrep", connection_security_policy!="mutual_tls", destination_workload_namespace=~"$namespace", destination_workload=~"$workload", source_workload=~"$srcwl", source_workload_namespace=~"$srcns"}[$__rate_interval])) by (source_workload, source_workload_namespace), 0.001)`, nil, nil, "all of this lab's traffic is mutual TLS"},
	{"workload", "Bytes Sent to Incoming TCP Connection (mTLS)", `round(sum(irate(istio_tcp_sent_bytes_total{connection_security_policy="mutual_tls", reporter=~"$qrep", destination_workload_namespace=~"$namespace", destination_workload=~"$workload", source_workload=~"$srcwl", source_workload_namespace=~"$srcns"}[$__rate_interval])) by (source_workload, source_workload_namespace), 0.001)`, nil, []string{"source_workload=client"}, ""},
	{"workload", "Bytes Sent to Incoming TCP Connection (plaintext)", `round(sum(irate(istio_tcp_sent_bytes_total{connection_security_policy!="mutual_tls", reporter=~"$qrep", destination_workload_namespace=~"$namespace", destination_workload=~"$workload", source_workload=~"$srcwl", source_workload_namespace=~"$srcns"}[$__rate_interval])) by (source_workload, source_workload_namespace), 0.001)`, nil, nil, "all of this lab's traffic is mutual TLS"},
	{"workload", "Bytes Sent on Outgoing TCP Connection (mTLS)", `round(sum(irate(istio_tcp_received_bytes_total{connection_security_policy="mutual_tls", reporter="source", source_workload_namespace=~"$namespace", source_workload=~"$workload", destination_service=~"$dstsvc"}[$__rate_interval])) by (destination_service), 0.001)`, nil, []string{"destination_service=reviews.default.svc.cluster.local"}, ""},
	{"workload", "Bytes Sent on Outgoing TCP Connection (plaintext)", `round(sum(irate(istio_tcp_received_bytes_total{connection_security_policy!="mutual_tls", reporter="source", source_workload_namespace=~"$namespace", source_workload=~"$workload", destination_service=~"$dstsvc"}[$__rate_interval])) by (destination_service), 0.001)`, nil, nil, "all of this lab's traffic is mutual TLS"},
	{"workload", "Bytes Received from Outgoing TCP Connection (mTLS)", `round(sum(irate(istio_tcp_sent_bytes_total{reporter="source", connection_security_policy="mutual_tls", source_workload_namespace=~"$namespace", source_workload=~"$workload", destination_service=~"$dstsvc"}[$__rate_interval])) by (destination_service), 0.001)`, nil, []string{"destination_service=reviews.default.svc.cluster.local"}, ""},
	{"workload", "Bytes Received from Outgoing TCP Connection (plaintext)", `round(sum(irate(istio_tcp_sent_bytes_total{reporter="source", connection_security_policy!="mutual_tls", source_workload_namespace=~"$namespace", source_workload=~"$workload", destination_service=~"$dstsvc"}[$__rate_interval])) by (destination_service), 0.001)`, nil, nil, "all of this lab's traffic is mutual TLS"},

	{"service", "TCP Received Bytes", `sum(irate(istio_tcp_received_bytes_total{reporter=~"$qrep", destination_service="$service"}[$__rate_interval]))`, nil, nil, ""},
	{"service", "TCP Sent Bytes", `sum(irate(istio_tcp_sent_bytes_total{reporter=~"$qrep", destination_service="$service"}[$__rate_interval]))`, nil, nil, ""},
	{"service", "Client Workloads: Bytes Received from Incoming TCP Connection (mTLS)", `round(sum(irate(istio_tcp_received_bytes_total{reporter=~"$qrep", connection_security_policy="mutual_tls", destination_service="$service", source_workload=~"$srcwl", source_workload_namespace=~"$srcns"}[$__rate_interval])) by (source_workload, source_workload_namespace), 0.001)`, nil, []string{"source_workload=client"}, ""},
	{"service", "Client Workloads: Bytes Sent to Incoming TCP Connection (mTLS)", `round(sum(irate(istio_tcp_sent_bytes_total{connection_security_policy="mutual_tls", reporter=~"$qrep", destination_service="$service", source_workload=~"$srcwl", source_workload_namespace=~"$srcns"}[$__rate_interval])) by (source_workload, source_workload_namespace), 0.001)`, nil, []string{"source_workload=client"}, ""},
	{"service", "Service Workloads: Bytes Received from Incoming TCP Connection (mTLS)", `round(sum(irate(istio_tcp_received_bytes_total{reporter="destination", connection_security_policy="mutual_tls", destination_service="$service", destination_workload=~"$dstwl", destination_workload_namespace=~"$dstns"}[$__rate_interval])) by (destination_workload, destination_workload_namespace), 0.001)`, nil, []string{"destination_workload=reviews-h2", "destination_workload_namespace=default"}, ""},
	{"service", "Service Workloads: Bytes Sent to Incoming TCP Connection (mTLS)", `round(sum(irate(istio_tcp_sent_bytes_total{connection_security_policy="mutual_tls", reporter="destination", destination_service="$service", destination_workload=~"$dstwl", destination_workload_namespace=~"$dstns"}[$__rate_interval])) by (destination_workload, destination_workload_namespace), 0.001)`, nil, []string{"destination_workload=reviews-h2"}, ""},
	{"service", "Service Workloads: Bytes Received from Incoming TCP Connection (plaintext)", `round(sum(irate(istio_tcp_received_bytes_total{reporter="destination", connection_security_policy!="mutual_tls", destination_service="$service", destination_workload=~"$dstwl", destination_workload_namespace=~"$dstns"}[$__rate_interval])) by (destination_workload, destination_workload_namespace), 0.001)`, nil, nil, "all of this lab's traffic is mutual TLS"},
}

// Istio's dashboards and ours on host traffic, through a real Prometheus (Debian's package) with the shipped
// scrape configuration and rules: two agents carry traffic to a service (and DNS), a third host scrapes them,
// and every expression above and every expression of docs/grafana/ambient-agent-hosts.json returns what it must.
func TestDashboardsOnHostTraffic(t *testing.T) {
	lab.Require(t, "prometheus", "socat", "nc", "bash")
	l := lab.New(t, 3)
	key := gossipKey(t, l)
	client, backend, prom := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	for _, h := range l.Hosts {
		h.DefaultRoute()
	}
	client.Issue(agentBin, "default", "client")
	backend.Issue(agentBin, "default", "reviews")
	backend.Start("echo", "socat", "TCP-LISTEN:9000,fork,reuseaddr", "SYSTEM:cat")
	backend.WaitListening(9000, 5*time.Second)
	agent := client.StartAgent(agentBin, lab.AgentConfig{Host: client, Gossip: &lab.Gossip{KeyFile: key, Seed: client}, Tables: fmt.Sprintf(`
[[workload]]
name = "client"
service_account = "client"
addresses = [%q]
`, client.Addr)}.String())
	backendAgent := backend.StartAgent(agentBin, lab.AgentConfig{Host: backend, Gossip: &lab.Gossip{KeyFile: key, Seed: client}, Tables: fmt.Sprintf(`
[[workload]]
name = "reviews-h2"
service_account = "reviews"
addresses = [%q]
[[service]]
name = "reviews"
ports = [{ port = 9080, target_port = 9000 }]
workloads = ["reviews-h2"]
`, backend.Addr)}.String())
	agent.WaitReady(t, 20*time.Second)
	backendAgent.WaitReady(t, 20*time.Second)
	vip := waitMesh(t, agent, 30*time.Second, "the service", func(m meshDump) bool { return m.serviceVIP("reviews") != "" }).serviceVIP("reviews")

	// Traffic for the whole test: a connection to the service every 200 ms, and a DNS query to the proxy.
	client.Start("traffic", "bash", "-c", fmt.Sprintf(`while true; do echo hello | nc -N -w 2 %s 9080 >/dev/null; sleep 0.2; done`, vip))
	client.Start("dns", "bash", "-c", `while true; do exec 3<>/dev/udp/127.0.0.1/15053; printf '\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07reviews\x00\x00\x01\x00\x01' >&3; exec 3>&-; sleep 0.2; done`)

	// Prometheus on the third host (no agent), with the shipped configuration: the file_sd directory and the
	// intervals are the test's.
	dir := t.TempDir()
	repo := lab.RepoRoot()
	cfg, err := os.ReadFile(filepath.Join(repo, "docs", "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.NewReplacer(
		"/etc/prometheus/ambient-agent/*.yml", filepath.Join(dir, "targets", "*.yml"),
		"scrape_interval: 15s", "scrape_interval: 1s", "evaluation_interval: 15s", "evaluation_interval: 1s",
		"- ambient-agent.rules.yml", "- "+filepath.Join(repo, "docs", "prometheus", "ambient-agent.rules.yml"),
	).Replace(string(cfg))
	if conf == string(cfg) || !strings.Contains(conf, filepath.Join(dir, "targets")) {
		t.Fatal("docs/prometheus/prometheus.yml changed: the test cannot point it at its targets")
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "targets"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o644))
	must(os.WriteFile(filepath.Join(dir, "targets", "hosts.yml"), fmt.Appendf(nil,
		"- targets: [%q]\n  labels: {node: h1}\n- targets: [%q]\n  labels: {node: h2}\n",
		client.Addr.String()+":15020", backend.Addr.String()+":15020"), 0o644))
	prom.Start("prometheus", "prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address=127.0.0.1:9090")

	query := func(expr string) ([]map[string]string, error) {
		code, body, err := prom.Get("http://127.0.0.1:9090/api/v1/query?query=" + url.QueryEscape(expr))
		if err != nil {
			return nil, err
		}
		var r struct {
			Status, Error string
			Data          struct {
				ResultType string `json:"resultType"`
				Result     []struct {
					Metric map[string]string `json:"metric"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(body), &r); err != nil || code != 200 || r.Status != "success" {
			return nil, fmt.Errorf("%d %s %v %s", code, r.Error, err, body)
		}
		out := make([]map[string]string, 0, len(r.Data.Result))
		for _, s := range r.Data.Result {
			out = append(out, s.Metric)
		}
		return out, nil
	}
	// Both agents scraped for long enough that every rate has its samples.
	deadline := time.Now().Add(60 * time.Second)
	for {
		up, err := query(`up{job="ambient-agent"} == 1`)
		if err == nil && len(up) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus does not scrape both agents: %v %v", up, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(8 * time.Second)

	check := func(q dashQuery) {
		t.Helper()
		var got []map[string]string
		var err error
		// A rate over a window the traffic loop just missed can be empty for a moment: ask a few times.
		for range 5 {
			if got, err = query(dashVars.Replace(q.expr)); err == nil && (q.empty != "" || satisfied(got, q)) {
				break
			}
			time.Sleep(time.Second)
		}
		where := q.dashboard + " dashboard, panel " + q.panel
		switch {
		case err != nil:
			t.Errorf("%s: %v\n%s", where, err, q.expr)
		case q.empty != "" && len(got) > 0:
			t.Errorf("%s: want no series (%s), got %v", where, q.empty, got)
		case q.empty == "" && !satisfied(got, q):
			t.Errorf("%s: got %v, want series for pods %v with %v\n%s", where, got, q.pods, q.labels, dashVars.Replace(q.expr))
		}
	}
	for _, q := range istioQueries {
		check(q)
	}

	// Our own dashboard: every expression answers, per agent.
	raw, err := os.ReadFile(filepath.Join(repo, "docs", "grafana", "ambient-agent-hosts.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("docs/grafana/ambient-agent-hosts.json: %v", err)
	}
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			n++
			q := dashQuery{dashboard: "ambient-agent hosts", panel: p.Title, expr: tg.Expr}
			if strings.Contains(tg.Expr, "by (node") {
				q.labels = []string{"node=h1"}
				if !strings.Contains(tg.Expr, "istio_dns_requests_total") {
					q.labels = append(q.labels, "node=h2")
				}
			}
			check(q)
		}
	}
	if n < 15 {
		t.Errorf("docs/grafana/ambient-agent-hosts.json has %d expressions, want the whole dashboard", n)
	}
}

// satisfied says whether a non-empty result holds a series for each of q's pods and each of its label pairs.
func satisfied(got []map[string]string, q dashQuery) bool {
	if len(got) == 0 {
		return false
	}
	has := func(k, v string) bool {
		return slices.ContainsFunc(got, func(m map[string]string) bool { return m[k] == v })
	}
	for _, p := range q.pods {
		if !has("pod", p) {
			return false
		}
	}
	for _, kv := range q.labels {
		k, v, _ := strings.Cut(kv, "=")
		if !has(k, v) {
			return false
		}
	}
	return true
}
