package dns

// Helpers of the tests: a real upstream DNS server (miekg/dns) on loopback, a
// proxy run for the duration of a test, and queries over real sockets.

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// upstream is a DNS server on 127.0.0.1, UDP and TCP on one port, with a fixed
// zone:
//
//	example.test.  A 192.0.2.7, MX 10 mail.example.test., TXT "hello"
//	big.test.      40 A records; over UDP only a truncated, empty reply
//	fail.test.     SERVFAIL
//	anything else  NXDOMAIN
//
// or SERVFAIL to everything with failAll.
type upstream struct {
	addr    netip.AddrPort
	failAll bool // answer SERVFAIL to everything

	mu   sync.Mutex
	seen []seenQuery
}

type seenQuery struct {
	network string
	msg     *mdns.Msg
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	return serveUpstream(t, &upstream{})
}

func serveUpstream(t *testing.T, u *upstream) *upstream {
	t.Helper()
	return serveUpstreamAt(t, u, netip.MustParseAddrPort("127.0.0.1:0"))
}

// serveUpstreamAt serves u on ap; port 0: a free one.
func serveUpstreamAt(t *testing.T, u *upstream, ap netip.AddrPort) *upstream {
	t.Helper()
	pc, ln := listenPairAt(t, ap)
	u.addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: u}, {Listener: ln, Handler: u}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.ActivateAndServe()
		}()
		<-started
		t.Cleanup(func() {
			_ = srv.Shutdown()
			<-done
		})
	}
	return u
}

// listenPair binds UDP and TCP on the same free port of 127.0.0.1.
func listenPair(t *testing.T) (*net.UDPConn, *net.TCPListener) {
	t.Helper()
	return listenPairAt(t, netip.MustParseAddrPort("127.0.0.1:0"))
}

// listenPairAt binds UDP and TCP on ap; port 0: the same free port for both.
func listenPairAt(t *testing.T, ap netip.AddrPort) (*net.UDPConn, *net.TCPListener) {
	t.Helper()
	for range 10 {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(pc.LocalAddr().(*net.UDPAddr).AddrPort()))
		if err == nil {
			return pc, ln
		}
		_ = pc.Close()
	}
	t.Fatalf("no port for UDP and TCP on %s", ap)
	return nil, nil
}

func (u *upstream) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	network := w.RemoteAddr().Network()
	u.mu.Lock()
	u.seen = append(u.seen, seenQuery{network, req.Copy()})
	u.mu.Unlock()

	resp := new(mdns.Msg).SetReply(req)
	resp.Authoritative = true
	q := req.Question[0]
	rr := func(s string) mdns.RR {
		r, err := mdns.NewRR(s)
		if err != nil {
			panic(err)
		}
		return r
	}
	switch strings.ToLower(q.Name) {
	case "example.test.":
		switch q.Qtype {
		case mdns.TypeA:
			resp.Answer = []mdns.RR{rr(q.Name + " 300 IN A 192.0.2.7")}
		case mdns.TypeMX:
			resp.Answer = []mdns.RR{rr(q.Name + " 300 IN MX 10 mail.example.test.")}
		case mdns.TypeTXT:
			resp.Answer = []mdns.RR{rr(q.Name + ` 300 IN TXT "hello"`)}
		}
	case "big.test.":
		if network == "udp" {
			resp.Truncated = true
			break
		}
		for i := range 40 {
			resp.Answer = append(resp.Answer, &mdns.A{
				Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60},
				A:   net.IPv4(198, 51, 100, byte(i+1)),
			})
		}
	case "fail.test.":
		resp.Rcode = mdns.RcodeServerFailure
	default:
		resp.Rcode = mdns.RcodeNameError
	}
	if u.failAll {
		resp = new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure)
	}
	if opt := req.IsEdns0(); opt != nil {
		resp.SetEdns0(4096, opt.Do())
	}
	_ = w.WriteMsg(resp)
}

// queries returns what the upstream was asked so far.
func (u *upstream) queries() []seenQuery {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenQuery(nil), u.seen...)
}

// meshLookup is a Lookup over a fixed map.
func meshLookup(names map[string][2][]netip.Addr) Lookup {
	return func(name string) ([]netip.Addr, []netip.Addr, bool) {
		v, ok := names[name]
		return v[0], v[1], ok
	}
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// startProxy runs a proxy on 127.0.0.1:<free port> until the test ends, and
// checks that Run then returns without error.
func startProxy(t *testing.T, o Options) *Server {
	t.Helper()
	if !o.Listen.IsValid() {
		o.Listen = netip.MustParseAddrPort("127.0.0.1:0")
	}
	s, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of its context ending")
		}
	})
	return s
}

// ask sends m to addr over network ("udp" or "tcp") and returns the reply.
func ask(t *testing.T, network string, addr netip.AddrPort, m *mdns.Msg) *mdns.Msg {
	t.Helper()
	c := &mdns.Client{Net: network, Timeout: 5 * time.Second, UDPSize: 65535}
	resp, _, err := c.Exchange(m, addr.String())
	if err != nil {
		t.Fatalf("%s query %s to %s: %v", network, m.Question[0].String(), addr, err)
	}
	return resp
}

func question(name string, qtype uint16) *mdns.Msg {
	return new(mdns.Msg).SetQuestion(name, qtype)
}
