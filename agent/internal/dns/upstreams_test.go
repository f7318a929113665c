package dns

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestReadResolvConf(t *testing.T) {
	conf := writeConf(t, "", `# written by DHCP
search corp.example example.org
options ndots:2 edns0
nameserver 192.0.2.53
nameserver   fe80::1%eth0   # link-local, with its zone
; nameserver 192.0.2.99
nameserver 192.0.2.53
nameserver 127.0.0.1
nameserver ::ffff:198.51.100.1
nameserver not-an-address
nameserver
domain corp.example
`)
	self := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")} // the proxy listening on port 53
	u := mustUpstreamSource(t, Options{ResolvConf: conf}, self)
	want := []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.53:53"),
		netip.MustParseAddrPort("[fe80::1%eth0]:53"),
		netip.MustParseAddrPort("198.51.100.1:53"),
	}
	if got := u.get(); !slices.Equal(got, want) {
		t.Errorf("upstreams %v, want %v", got, want)
	}
}

func TestGivenUpstreamsWinOverResolvConf(t *testing.T) {
	conf := writeConf(t, "", "nameserver 192.0.2.53\n")
	given := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:5353")}
	u := mustUpstreamSource(t, Options{Upstreams: given, ResolvConf: conf}, nil)
	if got := u.get(); !slices.Equal(got, given) {
		t.Errorf("upstreams %v, want the given %v", got, given)
	}
}

// TestResolvConfReread: a change is seen at the first check 5s after the last
// one, not before; a file that goes away leaves no upstream.
func TestResolvConfReread(t *testing.T) {
	conf := writeConf(t, "", "nameserver 192.0.2.1\n")
	u := mustUpstreamSource(t, Options{ResolvConf: conf}, nil)
	now := time.Unix(1000, 0)
	u.now = func() time.Time { return now }
	check := func(when string, want ...string) {
		t.Helper()
		var w []netip.AddrPort
		for _, s := range want {
			w = append(w, netip.AddrPortFrom(netip.MustParseAddr(s), 53))
		}
		if got := u.get(); !slices.Equal(got, w) {
			t.Errorf("%s: upstreams %v, want %v", when, got, w)
		}
	}
	check("first", "192.0.2.1")
	writeConf(t, conf, "nameserver 192.0.2.2\nnameserver 192.0.2.3\n")
	now = now.Add(4 * time.Second)
	check("4s later", "192.0.2.1")
	now = now.Add(time.Second)
	check("5s later", "192.0.2.2", "192.0.2.3")
	if err := os.Remove(conf); err != nil {
		t.Fatal(err)
	}
	now = now.Add(5 * time.Second)
	check("file removed")
	writeConf(t, conf, "nameserver 192.0.2.4\n")
	now = now.Add(5 * time.Second)
	check("file back", "192.0.2.4")
}

// writeConf writes a resolv.conf: at path, or in a new temporary directory when
// path is empty. The modification time moves on by a second each time, as the
// file system's clock might not between two writes of the same size.
func writeConf(t *testing.T, path, text string) string {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "resolv.conf")
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	confClock = confClock.Add(time.Second)
	if err := os.Chtimes(path, confClock, confClock); err != nil {
		t.Fatal(err)
	}
	return path
}

var confClock = time.Unix(1_700_000_000, 0)

// TestServerFollowsResolvConf: the proxy moves to the upstream that a changed
// resolv.conf names. resolv.conf has no ports, so that upstream listens on port 53
// (of a random loopback address).
func TestServerFollowsResolvConf(t *testing.T) {
	up := bindUpstream53(t)
	nobody := netip.AddrFrom4([4]byte{127, up.addr.Addr().As4()[1], up.addr.Addr().As4()[2], 54}) // nothing listens
	conf := writeConf(t, "", fmt.Sprintf("nameserver %s\n", nobody))
	s := startProxy(t, Options{ResolvConf: conf, UpstreamTimeout: 200 * time.Millisecond})
	s.fwd.upstreams.mu.Lock()
	s.fwd.upstreams.every = 0 // check at every query
	s.fwd.upstreams.mu.Unlock()
	if resp := ask(t, "udp", s.Addr(), question("example.test.", mdns.TypeA)); resp.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("before the change: rcode %s, want SERVFAIL", mdns.RcodeToString[resp.Rcode])
	}
	writeConf(t, conf, fmt.Sprintf("nameserver %s\n", up.addr.Addr()))
	if resp := ask(t, "udp", s.Addr(), question("example.test.", mdns.TypeA)); resp.Rcode != mdns.RcodeSuccess || len(resp.Answer) != 1 {
		t.Fatalf("after the change: %v, want the answer of the upstream now listed", resp)
	}
}

// bindUpstream53 starts the test upstream on port 53 of a random address of
// 127.0.0.0/8, which is all loopback on Linux: no other server is there.
func bindUpstream53(t *testing.T) *upstream {
	t.Helper()
	if os.Geteuid() != 0 {
		stop := t.Skipf
		if os.Getenv("CI") == "true" { // CI runs as root: a skip there would hide a failure
			stop = t.Fatalf
		}
		stop("needs root to bind port 53")
	}
	a := netip.AddrFrom4([4]byte{127, byte(1 + rand.IntN(250)), byte(rand.IntN(256)), 53})
	return serveUpstreamAt(t, &upstream{}, netip.AddrPortFrom(a, 53))
}

func TestMetrics(t *testing.T) {
	up := startUpstream(t)
	reg := prometheus.NewRegistry()
	s := startProxy(t, Options{
		Upstreams: []netip.AddrPort{up.addr}, Lookup: meshLookup(mesh), Search: search, Registerer: reg,
		Source: func(client netip.Addr) (string, string) {
			if client.IsLoopback() {
				return "sleep", "v1"
			}
			return "", ""
		},
	})
	ask(t, "udp", s.Addr(), question("reviews.", mdns.TypeA))
	ask(t, "udp", s.Addr(), question("example.test.", mdns.TypeA))
	ask(t, "tcp", s.Addr(), question("example.test.", mdns.TypeMX))
	down := startProxy(t, Options{Upstreams: []netip.AddrPort{closedPort(t)}, Registerer: reg}) // shares the metrics
	ask(t, "udp", down.Addr(), question("example.test.", mdns.TypeAAAA))

	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"requests a", testutil.ToFloat64(s.metrics.requests.WithLabelValues("a", "udp", "sleep", "v1")), 2},
		{"requests mx", testutil.ToFloat64(s.metrics.requests.WithLabelValues("mx", "tcp", "sleep", "v1")), 1},
		{"upstream requests a", testutil.ToFloat64(s.metrics.upstreamRequests.WithLabelValues("a", "udp", "sleep", "v1")), 1},
		{"upstream requests mx", testutil.ToFloat64(s.metrics.upstreamRequests.WithLabelValues("mx", "tcp", "sleep", "v1")), 1},
		// The second proxy names no source: unknown.
		{"upstream requests aaaa", testutil.ToFloat64(s.metrics.upstreamRequests.WithLabelValues("aaaa", "udp", "unknown", "unknown")), 1},
		{"upstream failures a", testutil.ToFloat64(s.metrics.upstreamFailures.WithLabelValues("a", "udp", "sleep", "v1")), 0},
		{"upstream failures aaaa", testutil.ToFloat64(s.metrics.upstreamFailures.WithLabelValues("aaaa", "udp", "unknown", "unknown")), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "istio_dns_upstream_request_duration_seconds"); err != nil || n != 3 {
		t.Errorf("duration histogram: %d series, %v", n, err)
	}
	if got := typeLabel(65280); got != "other" {
		t.Errorf("label of an unknown type: %q, want other", got)
	}
}
