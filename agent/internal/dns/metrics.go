package dns

import (
	"errors"
	"net/netip"
	"strings"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are ztunnel's DNS metrics (src/dns/metrics.rs), labelled by query
// type, protocol and the local workload that asked.
type metrics struct {
	requests         *prometheus.CounterVec   // every query
	upstreamRequests *prometheus.CounterVec   // queries forwarded upstream
	upstreamFailures *prometheus.CounterVec   // forwarded queries no upstream answered (SERVFAIL)
	upstreamDuration *prometheus.HistogramVec // time to the upstream's answer, all upstreams tried
	dropped          prometheus.Counter       // UDP queries dropped, maxInflight reached
}

// labelNames are ztunnel's DNS metric labels, in the order of query.values.
var labelNames = []string{"request_query_type", "request_protocol", "source_canonical_service", "source_canonical_revision"}

// query is one query's labels.
type query struct {
	qtype    uint16
	overTCP  bool
	service  string // the asking workload's canonical service and revision ("": unknown)
	revision string
}

func (q query) values() []string {
	proto := "udp"
	if q.overTCP {
		proto = "tcp"
	}
	return []string{typeLabel(q.qtype), proto, orUnknown(q.service), orUnknown(q.revision)}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// newMetrics makes the metrics and registers them with reg, if any. A second
// Server on the same registry shares the first one's.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_dns_requests_total", Help: "The total number of DNS requests.",
		}, labelNames),
		upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_dns_upstream_requests_total", Help: "The total number of DNS requests forwarded to upstream.",
		}, labelNames),
		upstreamFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_dns_upstream_failures_total", Help: "The total number of DNS requests that failed upstream.",
		}, labelNames),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "istio_dns_upstream_request_duration_seconds", Help: "The time to the upstream's answer to a forwarded DNS request.",
			Buckets: []float64{0.0005, 0.001, 0.01, 0.1, 1, 5}, // ztunnel's
		}, labelNames),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ambient_agent_dns_dropped_total", Help: "DNS queries over UDP dropped: too many being answered at once.",
		}),
	}
	if reg != nil {
		m.requests = register(reg, m.requests)
		m.upstreamRequests = register(reg, m.upstreamRequests)
		m.upstreamFailures = register(reg, m.upstreamFailures)
		m.upstreamDuration = register(reg, m.upstreamDuration)
		m.dropped = register(reg, m.dropped)
	}
	return m
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

// Source names the local workload that sent a query from client: its
// canonical service and revision, "" when none.
type Source func(client netip.Addr) (service, revision string)

func (m *metrics) request(q query)         { m.requests.WithLabelValues(q.values()...).Inc() }
func (m *metrics) upstreamRequest(q query) { m.upstreamRequests.WithLabelValues(q.values()...).Inc() }
func (m *metrics) upstreamFailure(q query) { m.upstreamFailures.WithLabelValues(q.values()...).Inc() }

// typeLabel names a query type in lowercase ("a", "aaaa"), as ztunnel does;
// the types miekg/dns does not know share one label, so that queries cannot
// make up label values without end.
func typeLabel(qtype uint16) string {
	if s, ok := mdns.TypeToString[qtype]; ok {
		return strings.ToLower(s)
	}
	return "other"
}
