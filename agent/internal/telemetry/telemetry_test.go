package telemetry

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func TestMetricNamesLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, "test")
	c := m.Open(slog.New(slog.DiscardHandler), ConnInfo{}, ConnLabels{Reporter: ReporterSource})
	c.Close(1, 2, FlagNone, "")
	m.GossipEvents.WithLabelValues("join").Inc()
	m.PolicyDecisions.WithLabelValues("allow").Inc()
	m.CertExpiry.WithLabelValues("spiffe://x", "workload").Set(1)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		// istio_build is Istio's own name, kept for its dashboards.
		if p.Metric == "istio_build" {
			continue
		}
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestConnCountsAndAccessLog(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, "test")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	labels := ConnLabels{Reporter: ReporterDestination, SourcePrincipal: "spiffe://cluster.local/ns/a/sa/b",
		DestinationWorkload: "web", ConnectionSecurityPolicy: SecurityMutualTLS}
	info := ConnInfo{Direction: "inbound", Src: netip.MustParseAddrPort("10.0.0.1:5"), Dst: netip.MustParseAddrPort("10.0.0.2:80")}
	c := m.Open(log, info, labels)
	if got := testutil.ToFloat64(m.open.WithLabelValues(ReporterDestination)); got != 1 {
		t.Errorf("sockets open = %v", got)
	}
	c.Close(100, 2000, FlagNone, "")
	c.Close(100, 2000, FlagNone, "") // only the first counts
	v := labels.values(FlagNone)
	if got := testutil.ToFloat64(m.received.WithLabelValues(v...)); got != 100 {
		t.Errorf("received bytes = %v", got)
	}
	if got := testutil.ToFloat64(m.sent.WithLabelValues(v...)); got != 2000 {
		t.Errorf("sent bytes = %v", got)
	}
	if got := testutil.ToFloat64(m.open.WithLabelValues(ReporterDestination)); got != 0 {
		t.Errorf("sockets open after close = %v", got)
	}
	d := m.Open(log, info, labels)
	d.Close(0, 0, FlagDeny, "policy ns/deny-b")
	if got := testutil.ToFloat64(m.failed.WithLabelValues(labels.values(FlagDeny)...)); got != 1 {
		t.Errorf("failed{DENY} = %v", got)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "response_flags=DENY") || !strings.Contains(lines[0], "bytes_sent=100") {
		t.Errorf("access log:\n%s", logs.String())
	}
	if strings.Contains(lines[0], "source_workload") || !strings.Contains(lines[0], "src_workload=unknown") {
		t.Errorf("unknown values not reported as unknown:\n%s", lines[0])
	}
}

// A live connection's bytes show at every scrape, and Close adds only the
// rest: the totals are exact, under response_flags "-" whatever the outcome.
func TestLiveBytes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, "test")
	labels := ConnLabels{Reporter: ReporterSource}
	c := m.Open(slog.New(slog.DiscardHandler), ConnInfo{}, labels)
	var sent, received int64
	c.Live(func() (int64, int64) { return sent, received })
	scrape := func() (float64, float64) {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var in, out float64
		for _, mf := range mfs {
			for _, mm := range mf.GetMetric() {
				switch mf.GetName() {
				case "istio_tcp_received_bytes_total":
					in += mm.GetCounter().GetValue()
				case "istio_tcp_sent_bytes_total":
					out += mm.GetCounter().GetValue()
				}
			}
		}
		return in, out
	}
	for i := int64(1); i <= 3; i++ {
		sent, received = 1000*i, 10*i
		if in, out := scrape(); in != float64(sent) || out != float64(received) {
			t.Fatalf("scrape %d: received %v sent %v, want %d and %d", i, in, out, sent, received)
		}
	}
	c.Close(3500, 40, FlagConnect, "reset")
	if in, out := scrape(); in != 3500 || out != 40 {
		t.Fatalf("after close: received %v sent %v, want 3500 and 40", in, out)
	}
	if got := testutil.ToFloat64(m.received.WithLabelValues(labels.values(FlagNone)...)); got != 3500 {
		t.Errorf("bytes under response_flags=-: %v", got)
	}
	sent = 99999 // a scrape after Close reads nothing more
	if in, _ := scrape(); in != 3500 {
		t.Errorf("counted after close: %v", in)
	}
}

func TestLimiter(t *testing.T) {
	// Long enough that the calls below fall within it even on a loaded machine.
	l := NewLimiter(time.Second)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("first event suppressed")
	}
	for i := 0; i < 3; i++ {
		if ok, _ := l.Allow("a"); ok {
			t.Fatal("event within the interval let through")
		}
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key suppressed")
	}
	time.Sleep(1100 * time.Millisecond)
	if ok, n := l.Allow("a"); !ok || n != 3 {
		t.Fatalf("after the interval: %v, %d suppressed; want true, 3", ok, n)
	}
}

func TestCanonicalLabels(t *testing.T) {
	if got := CanonicalService(map[string]string{"app": "a"}, "w"); got != "a" {
		t.Error(got)
	}
	if got := CanonicalService(map[string]string{"service.istio.io/canonical-name": "c", "app": "a"}, "w"); got != "c" {
		t.Error(got)
	}
	if got := CanonicalService(nil, "w"); got != "w" {
		t.Error(got)
	}
	if got := CanonicalRevision(map[string]string{"version": "v2"}); got != "v2" {
		t.Error(got)
	}
	if got := CanonicalRevision(nil); got != "latest" {
		t.Error(got)
	}
}

// Connections with the same labels share one label set; labels completed after Open (Labels) count the close and
// the bytes under the completed labels, not under the shared set; a series appears only once it counts.
func TestLabelSets(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, "test")
	log := slog.New(slog.DiscardHandler)
	labels := ConnLabels{Reporter: ReporterSource, SourceWorkload: "client", DestinationWorkload: "web"}
	a, b := m.Open(log, ConnInfo{}, labels), m.Open(log, ConnInfo{}, labels)
	if a.set != b.set {
		t.Error("two connections with the same labels have two label sets")
	}
	if n := testutil.CollectAndCount(m.closed); n != 0 {
		t.Errorf("%d closed series before any close", n)
	}
	if n := testutil.CollectAndCount(liveBytes{m}); n != 0 {
		t.Errorf("%d byte series before any byte", n)
	}

	b.Labels().DestinationPrincipal = "spiffe://td/ns/web/sa/web"
	a.Close(10, 20, FlagNone, "")
	b.Close(1, 2, FlagNone, "")
	completed := labels
	completed.DestinationPrincipal = "spiffe://td/ns/web/sa/web"
	if n := testutil.CollectAndCount(m.opened); n != 1 {
		t.Errorf("%d opened series, want 1: completing labels opens nothing", n)
	}
	for _, c := range []struct {
		vec    *prometheus.CounterVec
		labels ConnLabels
		want   float64
	}{
		{m.opened, labels, 2},
		{m.opened, completed, 0},
		{m.closed, labels, 1},
		{m.closed, completed, 1},
		{m.received, labels, 10},
		{m.received, completed, 1},
		{m.sent, completed, 2},
	} {
		if got := testutil.ToFloat64(c.vec.WithLabelValues(c.labels.values(FlagNone)...)); got != c.want {
			t.Errorf("%v with destination principal %q = %v, want %v", c.vec, c.labels.DestinationPrincipal, got, c.want)
		}
	}
	if got := testutil.ToFloat64(m.open.WithLabelValues(ReporterSource)); got != 0 {
		t.Errorf("sockets open after both closed = %v", got)
	}
	if m.sets[labels] != a.set || len(m.sets) != 2 {
		t.Errorf("%d label sets, want 2 (opened with, completed)", len(m.sets))
	}
	if n := testutil.CollectAndCount(m.opened); n != 2 { // labels, and completed made by the loop above
		t.Errorf("%d opened series, want 2", n)
	}
}
