package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestXDSMetrics(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry())
	m.received(&deltaResponse{typeURL: AddressType, resources: []resource{{payload: make([]byte, 100)}, {payload: make([]byte, 23)}}}, true)
	m.received(&deltaResponse{typeURL: AddressType}, true)
	m.received(&deltaResponse{typeURL: "type.googleapis.com/made.up.Thing"}, false)
	if n := testutil.ToFloat64(m.messages.WithLabelValues("other")); n != 1 {
		t.Errorf("an unsubscribed type: %v messages as other, want 1", n)
	}
	if n := testutil.ToFloat64(m.messages.WithLabelValues(AddressType)); n != 2 {
		t.Errorf("messages %v, want 2", n)
	}
	if n := testutil.ToFloat64(m.bytes.WithLabelValues(AddressType)); n != 123 {
		t.Errorf("bytes %v, want 123", n)
	}
	live, done := context.Background(), func() context.Context {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx
	}()
	for _, tc := range []struct {
		ctx        context.Context
		progressed bool
		err        error
		want       string
	}{
		{live, false, errors.New("dial: refused"), "ConnectionError"},
		{live, true, fmt.Errorf("xds: x: %w", io.EOF), "Reconnect"},
		{live, true, fmt.Errorf("xds: x: %w", status.Error(codes.Unavailable, "max age")), "Reconnect"},
		{live, true, errors.New("malformed response"), "Error"},
		{done, true, context.Canceled, "Complete"},
	} {
		before := testutil.ToFloat64(m.terminations.WithLabelValues(tc.want))
		m.terminated(tc.ctx, tc.progressed, tc.err)
		if got := testutil.ToFloat64(m.terminations.WithLabelValues(tc.want)); got != before+1 {
			t.Errorf("%v (progressed %v): not counted as %s", tc.err, tc.progressed, tc.want)
		}
	}
}
