package dns

import (
	"errors"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are ztunnel's DNS metrics, labelled by query type ("A", "AAAA", ...).
type metrics struct {
	requests         *prometheus.CounterVec // every query; the caller's, may be nil
	upstreamRequests *prometheus.CounterVec // queries forwarded upstream
	upstreamFailures *prometheus.CounterVec // forwarded queries no upstream answered (SERVFAIL)
	upstreamDuration prometheus.Histogram   // time to the upstream's answer, all upstreams tried
	dropped          prometheus.Counter     // UDP queries dropped, maxInflight reached
}

// newMetrics makes the upstream metrics and registers them with reg, if any. A
// second Server on the same registry shares the first one's.
func newMetrics(requests *prometheus.CounterVec, reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: requests,
		upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_dns_upstream_requests_total", Help: "DNS queries forwarded upstream.",
		}, []string{"request_type"}),
		upstreamFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_dns_upstream_failures_total", Help: "DNS queries forwarded upstream that no upstream answered.",
		}, []string{"request_type"}),
		upstreamDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "istio_dns_upstream_request_duration_seconds", Help: "Time to the upstream's answer to a forwarded DNS query.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 13), // 1ms to 4s
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ambient_agent_dns_dropped_total", Help: "DNS queries over UDP dropped: too many being answered at once.",
		}),
	}
	if reg != nil {
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

func (m *metrics) request(qtype uint16) {
	if m.requests != nil {
		m.requests.WithLabelValues(typeLabel(qtype)).Inc()
	}
}

func (m *metrics) upstreamRequest(qtype uint16) {
	m.upstreamRequests.WithLabelValues(typeLabel(qtype)).Inc()
}

func (m *metrics) upstreamFailure(qtype uint16) {
	m.upstreamFailures.WithLabelValues(typeLabel(qtype)).Inc()
}

// typeLabel names a query type; the types miekg/dns does not know share one
// label, so that queries cannot make up label values without end.
func typeLabel(qtype uint16) string {
	if s, ok := mdns.TypeToString[qtype]; ok {
		return s
	}
	return "other"
}
