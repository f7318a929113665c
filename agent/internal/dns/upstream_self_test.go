package dns

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func mustUpstreamSource(t *testing.T, o Options, self []netip.AddrPort) *upstreamSource {
	t.Helper()
	u, err := newUpstreamSource(o, self, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// A static upstream that is the proxy's own address ([dns] upstreams =
// ["127.0.0.1:15053"] with listen = "127.0.0.1:15053") must not make the proxy
// forward to itself: one client query must be one request, not a recursion that
// fills maxInflight and ties up a socket and a goroutine per hop until the
// upstream timeout.
func TestStaticUpstreamIsNotSelf(t *testing.T) {
	pc, ln := listenPair(t)
	ap := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	ln.Close()
	s, err := New(Options{Listen: ap, Upstreams: []netip.AddrPort{ap}, UpstreamTimeout: 300 * time.Millisecond, Registerer: prometheus.NewRegistry()})
	if err != nil {
		return // refusing the configuration is a fine answer
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c := &mdns.Client{Net: "udp", Timeout: 3 * time.Second}
	_, _, _ = c.Exchange(question("example.test.", mdns.TypeA), ap.String())
	if n := testutil.ToFloat64(s.metrics.requests.WithLabelValues("a", "udp", "unknown", "unknown")); n > 1 {
		t.Errorf("one query became %v requests to the proxy: it forwards to itself", n)
	}
}

// TestStaticUpstreamsSkipSelf: given upstreams that reach the proxy are dropped,
// the others kept in order; none left is an error, not a silent loop.
func TestStaticUpstreamsSkipSelf(t *testing.T) {
	mp := netip.MustParseAddrPort
	for _, tc := range []struct {
		name  string
		self  []netip.AddrPort
		given []netip.AddrPort
		want  []netip.AddrPort // nil: newUpstreamSource fails
	}{
		{"only self", []netip.AddrPort{mp("127.0.0.1:15053")}, []netip.AddrPort{mp("127.0.0.1:15053")}, nil},
		{"self as a mapped address", []netip.AddrPort{mp("127.0.0.1:15053")}, []netip.AddrPort{mp("[::ffff:127.0.0.1]:15053")}, nil},
		{"the IPv6 listen", []netip.AddrPort{mp("127.0.0.1:15053"), mp("[::1]:15053")}, []netip.AddrPort{mp("[::1]:15053")}, nil},
		{"loopback on a wildcard listen", []netip.AddrPort{mp("0.0.0.0:5353")}, []netip.AddrPort{mp("127.0.0.2:5353")}, nil},
		{
			"self among others", []netip.AddrPort{mp("127.0.0.1:15053")},
			[]netip.AddrPort{mp("192.0.2.53:53"), mp("127.0.0.1:15053"), mp("127.0.0.1:53")},
			[]netip.AddrPort{mp("192.0.2.53:53"), mp("127.0.0.1:53")},
		},
		{
			"other loopback address or port", []netip.AddrPort{mp("127.0.0.1:15053")},
			[]netip.AddrPort{mp("127.0.0.53:15053"), mp("127.0.0.1:5353")},
			[]netip.AddrPort{mp("127.0.0.53:15053"), mp("127.0.0.1:5353")},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := newUpstreamSource(Options{Upstreams: tc.given}, tc.self, slog.New(slog.DiscardHandler))
			switch {
			case tc.want == nil && err == nil:
				t.Fatalf("accepted upstreams %v that are the proxy itself", u.get())
			case tc.want == nil:
				return
			case err != nil:
				t.Fatal(err)
			}
			if got := u.get(); !slices.Equal(got, tc.want) {
				t.Errorf("upstreams %v, want %v", got, tc.want)
			}
		})
	}
}
