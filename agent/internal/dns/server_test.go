package dns

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/leak"

	mdns "github.com/miekg/dns"
)

var search = []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}

var mesh = map[string][2][]netip.Addr{
	"reviews.default.svc.cluster.local": {addrs("240.240.0.1", "240.240.0.2"), addrs("2001:2::1")},
	"ratings.prod.svc.cluster.local":    {addrs("240.240.0.3"), nil},
	"db.example.com":                    {nil, addrs("2001:2::5")},
}

func TestMeshNames(t *testing.T) {
	up := startUpstream(t)
	s := startProxy(t, Options{Upstreams: []netip.AddrPort{up.addr}, Search: search, Lookup: meshLookup(mesh)})
	for _, tc := range []struct {
		name  string
		qtype uint16
		want  []string // the answers' data; empty: NODATA
	}{
		{"reviews.default.svc.cluster.local.", mdns.TypeA, []string{"240.240.0.1", "240.240.0.2"}},
		{"reviews.default.svc.cluster.local.", mdns.TypeAAAA, []string{"2001:2::1"}},
		{"Reviews.Default.SVC.cluster.local.", mdns.TypeA, []string{"240.240.0.1", "240.240.0.2"}},
		{"reviews.", mdns.TypeA, []string{"240.240.0.1", "240.240.0.2"}},
		{"reviews.default.", mdns.TypeAAAA, []string{"2001:2::1"}},
		{"reviews.default.svc.", mdns.TypeA, []string{"240.240.0.1", "240.240.0.2"}},
		{"ratings.prod.", mdns.TypeA, []string{"240.240.0.3"}},
		{"ratings.prod.", mdns.TypeAAAA, nil},
		{"db.example.com.", mdns.TypeAAAA, []string{"2001:2::5"}},
		{"db.example.com.", mdns.TypeA, nil},
		{"reviews.", mdns.TypeMX, nil},
		{"reviews.default.svc.cluster.local.", mdns.TypeTXT, nil},
	} {
		for _, network := range []string{"udp", "tcp"} {
			resp := ask(t, network, s.Addr(), question(tc.name, tc.qtype))
			what := network + " " + tc.name + " " + mdns.TypeToString[tc.qtype]
			if resp.Rcode != mdns.RcodeSuccess || !resp.Authoritative || !resp.Response || !resp.RecursionAvailable {
				t.Errorf("%s: rcode %s aa %v qr %v ra %v, want NOERROR, authoritative", what,
					mdns.RcodeToString[resp.Rcode], resp.Authoritative, resp.Response, resp.RecursionAvailable)
			}
			var got []string
			for _, rr := range resp.Answer {
				h := rr.Header()
				if h.Name != tc.name || h.Ttl != 30 || h.Rrtype != tc.qtype {
					t.Errorf("%s: record %s: want the name as asked, TTL 30, type asked", what, rr)
				}
				got = append(got, strings.TrimPrefix(rr.String(), h.String()))
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("%s: answers %q, want %q", what, got, tc.want)
			}
		}
	}
	if q := up.queries(); len(q) != 0 {
		t.Errorf("mesh names reached the upstream: %v", q)
	}
}

// TestForwardsUnchanged: what the client gets through the proxy is what it gets
// from the upstream directly, but for the ID; and the upstream is asked what the
// client asked.
func TestForwardsUnchanged(t *testing.T) {
	up := startUpstream(t)
	s := startProxy(t, Options{Upstreams: []netip.AddrPort{up.addr}, Search: search, Lookup: meshLookup(mesh)})
	for _, tc := range []struct {
		name  string
		qtype uint16
		edns  bool
	}{
		{"example.test.", mdns.TypeA, false},
		{"example.test.", mdns.TypeMX, true},
		{"Example.TEST.", mdns.TypeTXT, true},
		{"nothing.test.", mdns.TypeA, false}, // NXDOMAIN
		{"reviews.test.", mdns.TypeA, false}, // a mesh short name's look-alike
	} {
		for _, network := range []string{"udp", "tcp"} {
			q := question(tc.name, tc.qtype)
			q.CheckingDisabled = true
			if tc.edns {
				q.SetEdns0(1400, true)
			}
			before := len(up.queries())
			viaProxy := ask(t, network, s.Addr(), q.Copy())
			direct := ask(t, network, up.addr, q.Copy())
			what := network + " " + tc.name + " " + mdns.TypeToString[tc.qtype]
			if viaProxy.Id != q.Id {
				t.Errorf("%s: reply ID %d, want the query's %d", what, viaProxy.Id, q.Id)
			}
			viaProxy.Id = direct.Id
			if viaProxy.String() != direct.String() {
				t.Errorf("%s: reply through the proxy differs from the upstream's\n--- proxy\n%s\n--- direct\n%s", what, viaProxy, direct)
			}
			seen := up.queries()[before]
			if seen.network != network {
				t.Errorf("%s: upstream asked over %s", what, seen.network)
			}
			seen.msg.Id = q.Id
			if seen.msg.String() != q.String() {
				t.Errorf("%s: upstream asked another query\n--- upstream got\n%s\n--- client sent\n%s", what, seen.msg, q)
			}
		}
	}
}

func TestUpstreamFailures(t *testing.T) {
	up := startUpstream(t)
	failing := serveUpstream(t, &upstream{failAll: true})
	dead := closedPort(t)
	silent := silentUpstream(t)
	fast := 300 * time.Millisecond
	for _, tc := range []struct {
		name      string
		upstreams []netip.AddrPort
		qname     string
		want      int
	}{
		{"down", []netip.AddrPort{dead}, "example.test.", mdns.RcodeServerFailure},
		{"silent", []netip.AddrPort{silent}, "example.test.", mdns.RcodeServerFailure},
		{"down then up", []netip.AddrPort{dead, silent, up.addr}, "example.test.", mdns.RcodeSuccess},
		// After a SERVFAIL the next upstream is asked, as the host's resolver
		// would; if none does better, the SERVFAIL is the answer.
		{"servfail then up", []netip.AddrPort{failing.addr, up.addr}, "example.test.", mdns.RcodeSuccess},
		{"servfail then down", []netip.AddrPort{up.addr, dead}, "fail.test.", mdns.RcodeServerFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startProxy(t, Options{Upstreams: tc.upstreams, UpstreamTimeout: fast})
			for _, network := range []string{"udp", "tcp"} {
				start := time.Now()
				resp := ask(t, network, s.Addr(), question(tc.qname, mdns.TypeA))
				if resp.Rcode != tc.want {
					t.Errorf("%s: rcode %s, want %s", network, mdns.RcodeToString[resp.Rcode], mdns.RcodeToString[tc.want])
				}
				if d := time.Since(start); d > time.Duration(len(tc.upstreams))*2*fast+time.Second {
					t.Errorf("%s: answered after %s: the upstream timeout is not applied", network, d)
				}
			}
		})
	}
}

// closedPort is an address where nothing listens: UDP gets ICMP port
// unreachable, TCP a reset.
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, ln := listenPair(t)
	ap := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	_ = pc.Close()
	_ = ln.Close()
	return ap
}

// silentUpstream reads queries and never answers; TCP connections are accepted
// by the kernel and never served.
func silentUpstream(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, ln := listenPair(t)
	t.Cleanup(func() { _ = pc.Close(); _ = ln.Close() })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestTruncatedUpstreamReply: a UDP reply with TC set is fetched again over TCP
// from the same upstream, and then cut to the client's UDP size.
func TestTruncatedUpstreamReply(t *testing.T) {
	up := startUpstream(t)
	s := startProxy(t, Options{Upstreams: []netip.AddrPort{up.addr}})

	large := question("big.test.", mdns.TypeA)
	large.SetEdns0(4096, false)
	resp := ask(t, "udp", s.Addr(), large)
	if resp.Truncated || len(resp.Answer) != 40 {
		t.Errorf("EDNS 4096 over UDP: tc %v, %d answers, want the 40 fetched over TCP", resp.Truncated, len(resp.Answer))
	}
	networks := ""
	for _, q := range up.queries() {
		networks += q.network + " "
	}
	if networks != "udp tcp " {
		t.Errorf("upstream asked over %q, want udp then tcp", networks)
	}

	resp = ask(t, "udp", s.Addr(), question("big.test.", mdns.TypeA)) // 512 bytes
	if !resp.Truncated || len(resp.Answer) == 0 || len(resp.Answer) >= 40 {
		t.Errorf("512 bytes over UDP: tc %v, %d answers, want as many as fit and TC", resp.Truncated, len(resp.Answer))
	}
	resp = ask(t, "tcp", s.Addr(), question("big.test.", mdns.TypeA))
	if resp.Truncated || len(resp.Answer) != 40 {
		t.Errorf("over TCP: tc %v, %d answers, want 40", resp.Truncated, len(resp.Answer))
	}
}

// TestMalformedQueries: no question or two get FORMERR with the query's ID; a
// response or a message shorter than a header gets nothing.
func TestMalformedQueries(t *testing.T) {
	up := startUpstream(t)
	s := startProxy(t, Options{Upstreams: []netip.AddrPort{up.addr}, Lookup: meshLookup(mesh), Search: search})
	two := question("example.test.", mdns.TypeA)
	two.Question = append(two.Question, mdns.Question{Name: "reviews.", Qtype: mdns.TypeA, Qclass: mdns.ClassINET})
	none := question("example.test.", mdns.TypeA)
	none.Question = nil
	cut, _ := question("example.test.", mdns.TypeA).Pack()
	cut = cut[:len(cut)-3]
	response := new(mdns.Msg).SetReply(question("example.test.", mdns.TypeA))

	for _, tc := range []struct {
		name    string
		msg     []byte
		formErr bool
	}{
		{"two questions", mustPack(t, two), true},
		{"no question", mustPack(t, none), true},
		{"cut short", cut, true},
		{"a response", mustPack(t, response), false},
		{"shorter than a header", []byte{1, 2, 3, 4, 5}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("udp", s.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			wait := 300 * time.Millisecond // for an answer that must not come
			if tc.formErr {
				wait = 3 * time.Second
			}
			_ = c.SetDeadline(time.Now().Add(wait))
			if _, err := c.Write(tc.msg); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1024)
			n, err := c.Read(buf)
			if !tc.formErr {
				if err == nil {
					t.Fatalf("got an answer: %x", buf[:n])
				}
				return
			}
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			resp := new(mdns.Msg)
			if err := resp.Unpack(buf[:n]); err != nil {
				t.Fatalf("answer does not parse: %v", err)
			}
			if resp.Rcode != mdns.RcodeFormatError || !resp.Response || !bytes.Equal(buf[:2], tc.msg[:2]) {
				t.Errorf("answer %v, want FORMERR with the query's ID", resp)
			}
		})
	}
	if q := up.queries(); len(q) != 0 {
		t.Errorf("malformed queries reached the upstream: %v", q)
	}
}

func mustPack(t *testing.T, m *mdns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNoUpstream: with an empty resolv.conf, mesh names are answered, others get
// SERVFAIL, and the warning is logged once.
func TestNoUpstream(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, []byte("search example.org\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &syncWriter{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	s := startProxy(t, Options{ResolvConf: conf, Lookup: meshLookup(mesh), Search: search, Log: log})
	for range 3 {
		if resp := ask(t, "udp", s.Addr(), question("example.test.", mdns.TypeA)); resp.Rcode != mdns.RcodeServerFailure {
			t.Errorf("no upstream: rcode %s, want SERVFAIL", mdns.RcodeToString[resp.Rcode])
		}
		if resp := ask(t, "udp", s.Addr(), question("reviews.", mdns.TypeA)); len(resp.Answer) != 2 {
			t.Errorf("no upstream: mesh name answered %v", resp)
		}
	}
	text := logs.String()
	if n := strings.Count(text, "no upstream DNS server"); n != 1 {
		t.Errorf("logged the missing upstream %d times, want once:\n%s", n, text)
	}
}

// syncWriter is a buffer that the server writes and the test reads.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func TestPortInUse(t *testing.T) {
	pc, ln := listenPair(t)
	defer pc.Close()
	defer ln.Close()
	addr := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	_, err := New(Options{Listen: addr})
	if err == nil {
		t.Fatal("New on a port in use succeeded")
	}
	if !strings.Contains(err.Error(), addr.String()) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error %q: want the address %s and EADDRINUSE", err, addr)
	}
	// TCP alone taken: the UDP socket bound first must be closed again.
	_ = pc.Close()
	if _, err := New(Options{Listen: addr}); err == nil || !strings.Contains(err.Error(), "tcp") {
		t.Errorf("New with the TCP port in use: got %v, want an error naming tcp", err)
	}
	if c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr)); err != nil {
		t.Errorf("UDP port left bound after New failed: %v", err)
	} else {
		_ = c.Close()
	}
}

func TestAlsoListen(t *testing.T) {
	up := startUpstream(t)
	s := startProxy(t, Options{
		Upstreams:  []netip.AddrPort{up.addr},
		AlsoListen: []netip.AddrPort{netip.MustParseAddrPort("[::1]:0")},
		Lookup:     meshLookup(mesh), Search: search,
	})
	addrs := s.Addrs()
	if len(addrs) != 2 || addrs[1].Addr() != netip.IPv6Loopback() || addrs[1].Port() != s.Addr().Port() {
		t.Fatalf("Addrs %v, want 127.0.0.1 and ::1 on one port", addrs)
	}
	for _, network := range []string{"udp", "tcp"} {
		if resp := ask(t, network, addrs[1], question("reviews.", mdns.TypeAAAA)); len(resp.Answer) != 1 {
			t.Errorf("%s over ::1: %v", network, resp)
		}
	}
}

// TestRunStopsEverything: Run returns soon after its context ends, with queries
// in flight (an upstream that never answers) and an idle TCP connection open, and
// leaves neither goroutines nor file descriptors behind.
func TestRunStopsEverything(t *testing.T) {
	silent := silentUpstream(t)
	noLeaks := leak.Check(t, leak.Options{Within: 2 * time.Second})

	s, err := New(Options{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Upstreams: []netip.AddrPort{silent}, UpstreamTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	idle, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	clients := []net.Conn{idle}
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	for _, network := range []string{"udp", "tcp"} {
		c, err := net.Dial(network, s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		q := mustPack(t, question("example.test.", mdns.TypeA))
		if network == "tcp" {
			q = append([]byte{0, byte(len(q))}, q...)
		}
		if _, err := c.Write(q); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // the queries reach the silent upstream
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run still running 2s after its context ended")
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("second Run succeeded")
	}
	for _, c := range clients {
		_ = c.Close()
	}
	noLeaks()
}

func TestCloseWithoutRun(t *testing.T) {
	s, err := New(Options{Listen: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("Run after Close succeeded")
	}
	// The port is free again.
	s2, err := New(Options{Listen: addr})
	if err != nil {
		t.Fatalf("New on the closed server's address: %v", err)
	}
	_ = s2.Close()
}

// TestUpstreamSocketsGetControl: every upstream socket, UDP and TCP, passes
// through Control (where the agent sets its mark) before it connects.
func TestUpstreamSocketsGetControl(t *testing.T) {
	up := startUpstream(t)
	var mu sync.Mutex
	var networks []string
	control := func(network, address string, _ syscall.RawConn) error {
		mu.Lock()
		defer mu.Unlock()
		networks = append(networks, network+" "+address)
		return nil
	}
	s := startProxy(t, Options{Upstreams: []netip.AddrPort{up.addr}, Control: control})
	ask(t, "udp", s.Addr(), question("example.test.", mdns.TypeA))
	ask(t, "tcp", s.Addr(), question("example.test.", mdns.TypeA))
	ask(t, "udp", s.Addr(), question("big.test.", mdns.TypeA)) // UDP, then TCP
	mu.Lock()
	defer mu.Unlock()
	a := up.addr.String()
	want := []string{"udp4 " + a, "tcp4 " + a, "udp4 " + a, "tcp4 " + a}
	if strings.Join(networks, ",") != strings.Join(want, ",") {
		t.Errorf("Control saw %q, want %q", networks, want)
	}
}
