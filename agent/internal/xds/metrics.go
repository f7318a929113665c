package xds

import (
	"context"
	"errors"
	"io"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// metrics are ztunnel's xDS metrics (src/xds/metrics.rs).
type metrics struct {
	terminations *prometheus.CounterVec // reason: ConnectionError, Error, Reconnect, Complete
	messages     *prometheus.CounterVec // url: responses received, by type
	bytes        *prometheus.CounterVec // url: resource bytes received, by type
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		terminations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_xds_connection_terminations_total", Help: "The total number of completed connections to xds server (unstable).",
		}, []string{"reason"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_xds_message_total", Help: "Total number of messages received (unstable).",
		}, []string{"url"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_xds_message_bytes_total", Help: "Total number of bytes received (unstable).",
		}, []string{"url"}),
	}
	if reg != nil {
		reg.MustRegister(m.terminations, m.messages, m.bytes)
	}
	return m
}

// received counts one response and the bytes of its resources, by type; a
// type the client did not subscribe to counts as "other", so that a server
// cannot make up label values without end.
func (m *metrics) received(resp *deltaResponse, subscribed bool) {
	n := 0
	for _, r := range resp.resources {
		n += len(r.payload)
	}
	url := resp.typeURL
	if !subscribed {
		url = "other"
	}
	m.messages.WithLabelValues(url).Inc()
	m.bytes.WithLabelValues(url).Add(float64(n))
}

// terminated counts the end of a stream: ConnectionError when it never got an
// answer, Complete when the agent is stopping, Reconnect when istiod closed it
// (max connection age, a restart), Error for anything else.
func (m *metrics) terminated(ctx context.Context, progressed bool, err error) {
	reason := "Error"
	switch {
	case ctx.Err() != nil:
		reason = "Complete"
	case !progressed:
		reason = "ConnectionError"
	case errors.Is(err, io.EOF) || status.Code(errors.Unwrap(err)) == codes.Unavailable || status.Code(err) == codes.Unavailable:
		reason = "Reconnect"
	}
	m.terminations.WithLabelValues(reason).Inc()
}
