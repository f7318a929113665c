package telemetry

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// value is the value of the series of family name with label l=v (a counter's or a gauge's; a histogram's count).
func value(t *testing.T, g prometheus.Gatherer, name, l, v string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			for _, lp := range m.Label {
				if lp.GetName() == l && lp.GetValue() == v {
					switch mf.GetType() {
					case dto.MetricType_COUNTER:
						return m.Counter.GetValue()
					case dto.MetricType_GAUGE:
						return m.Gauge.GetValue()
					case dto.MetricType_HISTOGRAM:
						return float64(m.Histogram.GetSampleCount())
					}
				}
			}
		}
	}
	return 0
}

type agentMetrics struct {
	reg    *prometheus.Registry
	closed *prometheus.CounterVec
	open   *prometheus.GaugeVec
	dur    *prometheus.HistogramVec
	expiry *prometheus.GaugeVec
}

func newAgentMetrics() agentMetrics {
	m := agentMetrics{reg: prometheus.NewRegistry(),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_closed_total"}, []string{"dst"}),
		open:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "istio_tcp_sockets_open"}, []string{"dst"}),
		dur:    prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ambient_agent_handshake_seconds"}, []string{"dst"}),
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ambient_agent_certificate_expiry_seconds"}, []string{"dst"}),
	}
	m.reg.MustRegister(m.closed, m.open, m.dur, m.expiry)
	return m
}

// A replaced agent's counters add to the serving agent's while it drains and after it exited; its open
// sockets count while it runs; its other gauges never; a counter never goes back.
func TestCarriedCountersNeverGoBack(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "handoff.metrics.")
	old, next := newAgentMetrics(), newAgentMetrics()
	old.closed.WithLabelValues("a").Add(7)
	old.closed.WithLabelValues("b").Add(1)
	old.open.WithLabelValues("a").Set(2)
	old.dur.WithLabelValues("a").Observe(0.1)
	old.expiry.WithLabelValues("a").Set(1e9)
	next.closed.WithLabelValues("a").Add(3)
	next.open.WithLabelValues("a").Set(1)
	next.expiry.WithLabelValues("a").Set(1e9)

	// The replaced agent, still running (this test's own pid stands for it), writes its file.
	writer := NewCarried(old.reg, prefix)
	writer.self = os.Getppid()
	if err := writer.WriteOwn(); err != nil {
		t.Fatal(err)
	}
	serving := NewCarried(next.reg, prefix)
	serving.self = -1 // the file's pid (our parent) runs: it is read, not folded
	check := func(when string, closedA, closedB, open, hist, expiry float64) {
		t.Helper()
		for _, c := range []struct {
			name, v   string
			got, want float64
		}{
			{"istio_tcp_connections_closed_total", "a", value(t, serving, "istio_tcp_connections_closed_total", "dst", "a"), closedA},
			{"istio_tcp_connections_closed_total", "b", value(t, serving, "istio_tcp_connections_closed_total", "dst", "b"), closedB},
			{"istio_tcp_sockets_open", "a", value(t, serving, "istio_tcp_sockets_open", "dst", "a"), open},
			{"ambient_agent_handshake_seconds", "a", value(t, serving, "ambient_agent_handshake_seconds", "dst", "a"), hist},
			{"ambient_agent_certificate_expiry_seconds", "a", value(t, serving, "ambient_agent_certificate_expiry_seconds", "dst", "a"), expiry},
		} {
			if c.got != c.want {
				t.Errorf("%s: %s{dst=%q} = %v, want %v", when, c.name, c.v, c.got, c.want)
			}
		}
	}
	check("while the replaced agent drains", 10, 1, 3, 1, 1e9)

	// It has exited: its file is folded into the base, once, and removed.
	dead := prefix + "999999999"
	if err := os.Rename(prefix+strconv.Itoa(os.Getppid()), dead); err != nil {
		t.Fatal(err)
	}
	check("after the replaced agent exited", 10, 1, 1, 1, 1e9)
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("the file of an agent that exited is still there: %v", err)
	}
	check("on the next scrape", 10, 1, 1, 1, 1e9)

	// The serving agent is replaced in turn: what it writes includes what it carries.
	next.closed.WithLabelValues("a").Add(1)
	serving.self = 4242
	if err := serving.WriteOwn(); err != nil {
		t.Fatal(err)
	}
	mfs, err := readFamilies(prefix + "4242")
	if err != nil {
		t.Fatal(err)
	}
	g := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return mfs, nil })
	if v := value(t, g, "istio_tcp_connections_closed_total", "dst", "a"); v != 11 {
		t.Errorf("the next agent is handed %v connections closed, want 11 (7 + 3 + 1)", v)
	}
}
