package telemetry

import (
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Istio's request metrics, which its waypoint (Envoy) reports and the agent's L7 waypoint reports alike.

// ReporterWaypoint is the reporter of a waypoint's request metrics.
const ReporterWaypoint = "waypoint"

// requestLabelNames are the connection labels (request_protocol holding http or grpc) and the response's code
// and gRPC status.
var requestLabelNames = append(append([]string(nil), connLabelNames...), "response_code", "grpc_response_status")

// protocolLabel is where request_protocol is among the label values.
var protocolLabel = slices.Index(connLabelNames, "request_protocol")

// Istio's default buckets: milliseconds for durations, bytes for sizes.
var (
	durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
	sizeBuckets     = prometheus.ExponentialBuckets(1, 10, 9)
)

type requestMetrics struct {
	total     *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	reqBytes  *prometheus.HistogramVec
	respBytes *prometheus.HistogramVec
}

func newRequestMetrics(reg prometheus.Registerer) *requestMetrics {
	hist := func(name, help string, buckets []float64) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, requestLabelNames)
	}
	m := &requestMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total", Help: "The total number of requests."},
			requestLabelNames),
		duration:  hist("istio_request_duration_milliseconds", "The duration of requests, in milliseconds.", durationBuckets),
		reqBytes:  hist("istio_request_bytes", "The sizes of requests' bodies and headers, in bytes.", sizeBuckets),
		respBytes: hist("istio_response_bytes", "The sizes of responses' bodies and headers, in bytes.", sizeBuckets),
	}
	reg.MustRegister(m.total, m.duration, m.reqBytes, m.respBytes)
	return m
}

// Request is one HTTP or gRPC request a waypoint handled.
type Request struct {
	Protocol   string // "http" or "grpc"
	Code       int    // the response's status (0: none was sent)
	GRPCStatus string // "" when not gRPC
	Flag       Flag
	Duration   time.Duration
	// RequestBytes and ResponseBytes count headers and bodies.
	RequestBytes, ResponseBytes int64
}

// Request records one request with the labels l (Reporter "waypoint").
func (m *Metrics) Request(l *ConnLabels, r Request) {
	v := l.values(r.Flag)
	v[protocolLabel] = r.Protocol
	v = append(v, strconv.Itoa(r.Code), r.GRPCStatus)
	if r.GRPCStatus == "" {
		v[len(v)-1] = "-"
	}
	m.requests.total.WithLabelValues(v...).Inc()
	m.requests.duration.WithLabelValues(v...).Observe(float64(r.Duration) / float64(time.Millisecond))
	m.requests.reqBytes.WithLabelValues(v...).Observe(float64(r.RequestBytes))
	m.requests.respBytes.WithLabelValues(v...).Observe(float64(r.ResponseBytes))
}
