package e2e

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// metricValue finds the sample of name whose labels include every want pair.
func metricValue(t *testing.T, body, name string, want map[string]string) (float64, bool) {
	t.Helper()
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `(?:\{(.*)\})? (\S+)$`)
	for _, line := range strings.Split(body, "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ok := true
		for k, v := range want {
			if !strings.Contains(m[1], fmt.Sprintf(`%s=%q`, k, v)) {
				ok = false
			}
		}
		if ok {
			f, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				t.Fatal(err)
			}
			return f, true
		}
	}
	return 0, false
}

func scrape(t *testing.T, h *lab.Host) string {
	t.Helper()
	code, body, err := h.Get("http://127.0.0.1:15020/metrics")
	if err != nil || code != 200 {
		t.Fatalf("scrape %s: %d %v", h.Name, code, err)
	}
	return body
}

// After captured traffic between two hosts, both agents report it with Istio's
// labels, and the byte counters match what curl sent and received.
func TestMetricsOfCapturedTraffic(t *testing.T) {
	d := newDatapathLab(t)
	out, err := d.a.Run(lab.Timeout(10*time.Second), "curl", "-sS", "--max-time", "5", "-o", "/dev/null",
		"-w", "%{size_request} %{size_header} %{size_download}", fmt.Sprintf("http://%s:8080/", d.b.Addr))
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	var sent, header, body float64
	if _, err := fmt.Sscan(out, &sent, &header, &body); err != nil {
		t.Fatalf("curl sizes %q: %v", out, err)
	}
	received := header + body
	d.agentA.WaitLog(t, "direction=outbound", 5*time.Second)
	d.agentB.WaitLog(t, "direction=inbound ", 5*time.Second)

	id := "spiffe://cluster.local/ns/default/sa/default"
	for _, side := range []struct {
		host     *lab.Host
		reporter string
	}{{d.a, "source"}, {d.b, "destination"}} {
		metrics := scrape(t, side.host)
		labels := map[string]string{
			"reporter": side.reporter, "source_workload": "app-h1", "destination_workload": "app-h2",
			"source_principal": id, "destination_principal": id, "connection_security_policy": "mutual_tls",
			"response_flags": "-", "request_protocol": "tcp", "destination_service": "unknown",
		}
		if n, ok := metricValue(t, metrics, "istio_tcp_connections_opened_total", labels); !ok || n != 1 {
			t.Errorf("%s: opened{%v} = %v, %v\n%s", side.host.Name, labels, n, ok, grepIstio(metrics))
		}
		if n, ok := metricValue(t, metrics, "istio_tcp_connections_closed_total", labels); !ok || n != 1 {
			t.Errorf("%s: closed = %v, %v", side.host.Name, n, ok)
		}
		if n, _ := metricValue(t, metrics, "istio_tcp_received_bytes_total", labels); n != sent {
			t.Errorf("%s: received bytes %v, curl sent %v", side.host.Name, n, sent)
		}
		if n, _ := metricValue(t, metrics, "istio_tcp_sent_bytes_total", labels); n != received {
			t.Errorf("%s: sent bytes %v, curl received %v", side.host.Name, n, received)
		}
	}
	// Exactly one access-log line per connection on each side.
	if n := strings.Count(d.agentA.Log(), "msg=access"); n != 1 {
		t.Errorf("A has %d access-log lines for one connection", n)
	}
	if n := strings.Count(d.agentB.Log(), "msg=access"); n != 1 {
		t.Errorf("B has %d access-log lines for one connection", n)
	}
}

// counted is a series a host's metrics must show at least once: a metric name and labels it must have.
type counted struct {
	name   string
	labels map[string]string
}

// waitCounted waits up to 5 s for h's metrics to show every series at least once; what names them in the failure.
func waitCounted(t *testing.T, h *lab.Host, what string, series ...counted) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		metrics := scrape(t, h)
		if !slices.ContainsFunc(series, func(c counted) bool {
			v, ok := metricValue(t, metrics, c.name, c.labels)
			return !ok || v < 1
		}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's metrics do not show %s:\n%s", h.Name, what, grepIstio(metrics))
		}
	}
}

func grepIstio(metrics string) string {
	var out []string
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, "istio_tcp") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
