package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ambient-agent/ambient-agent/agent/internal/handoff"
)

// Lookup answers for mesh hostnames. name is lowercased and fully qualified,
// without the trailing dot ("reviews.default.svc.cluster.local"). ok is false
// when the name is not the mesh's: the query then goes upstream. It is called
// concurrently and must not block.
type Lookup func(name string) (v4, v6 []netip.Addr, ok bool)

// Options configure a Server.
type Options struct {
	// Listen is where the proxy serves UDP and TCP, e.g. 127.0.0.1:15053. Port 0
	// picks a free port (tests).
	Listen netip.AddrPort
	// AlsoListen are more addresses served the same way; port 0 means Listen's
	// port. With IPv6 DNS capture, [::1]:<port>: REDIRECT sends IPv6 queries there.
	AlsoListen []netip.AddrPort
	// Sockets holds the listening sockets for a handoff, and those inherited
	// from the agent this one replaces (nil: bind each).
	Sockets *handoff.Sockets
	// Upstreams are where other names are resolved, tried in order. Empty: the
	// nameservers of ResolvConf. The proxy's own addresses are dropped from
	// them; New fails when that leaves none.
	Upstreams []netip.AddrPort
	// ResolvConf is read for upstreams when Upstreams is empty, and re-read when it
	// changes. Empty: /run/systemd/resolve/resolv.conf when it exists (the real
	// upstreams of systemd-resolved), else /etc/resolv.conf.
	ResolvConf string
	// Search are the domains a name is also tried under, in order, e.g.
	// "default.svc.cluster.local", "svc.cluster.local", "cluster.local".
	Search []string
	// Lookup finds mesh names; nil: none, every query goes upstream.
	Lookup Lookup
	// Control runs on every upstream socket before it connects; the agent sets its
	// mark there (capture.MarkControl) so that DNS capture lets the query through.
	Control func(network, address string, c syscall.RawConn) error
	// UpstreamTimeout bounds each exchange with an upstream. 0: 2s.
	UpstreamTimeout time.Duration
	// Log receives warnings (no upstream, upstreams failing); nil: discarded.
	Log *slog.Logger
	// Source, if set, names the local workload that asked, for the metrics' source labels.
	Source Source
	// Registerer, if set, gets the metrics (see newMetrics).
	Registerer prometheus.Registerer
}

// Server is the DNS proxy. New binds its sockets; Run serves them.
type Server struct {
	log      *slog.Logger
	lookup   Lookup
	search   []string
	fwd      *forwarder
	metrics  *metrics
	source   Source
	sockets  []sockets
	inflight chan struct{} // a slot per query being answered

	ctx    context.Context // of the queries being answered; canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // serving loops, queries, TCP connections

	ran       atomic.Bool
	closeOnce sync.Once
	mu        sync.Mutex
	closed    bool
	conns     map[net.Conn]struct{} // open TCP connections
}

// sockets are the UDP and TCP sockets of one address.
type sockets struct {
	addr netip.AddrPort
	udp  *net.UDPConn
	tcp  *net.TCPListener
}

// Limits on what a flood of queries can take.
const (
	maxInflight = 1024             // queries answered at once; more UDP queries are dropped
	maxTCPConns = 256              // open TCP connections; more are closed at once
	tcpIdle     = 10 * time.Second // a TCP connection without a query is closed
	ttl         = 30               // seconds, of mesh answers
)

// New binds the proxy's UDP and TCP sockets on every address; an error names the
// address that could not be bound.
func New(o Options) (*Server, error) {
	if !o.Listen.IsValid() {
		return nil, errors.New("dns: no listen address")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lookup := o.Lookup
	if lookup == nil {
		lookup = func(string) ([]netip.Addr, []netip.Addr, bool) { return nil, nil, false }
	}
	s := &Server{
		log:      log,
		lookup:   lookup,
		search:   searchDomains(o.Search),
		metrics:  newMetrics(o.Registerer),
		source:   o.Source,
		inflight: make(chan struct{}, maxInflight),
		conns:    map[net.Conn]struct{}{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	first, err := bind(o.Listen, o.Sockets)
	if err != nil {
		return nil, err
	}
	s.sockets = append(s.sockets, first)
	for _, ap := range o.AlsoListen {
		if ap.Port() == 0 {
			ap = netip.AddrPortFrom(ap.Addr(), first.addr.Port())
		}
		more, err := bind(ap, o.Sockets)
		if err != nil {
			_ = s.Close()
			return nil, err
		}
		s.sockets = append(s.sockets, more)
	}
	var self []netip.AddrPort
	for _, so := range s.sockets {
		self = append(self, so.addr)
	}
	ups, err := newUpstreamSource(o, self, log)
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	s.fwd = newForwarder(o, ups, s.metrics, log)
	return s, nil
}

// bind opens UDP and TCP on ap, or takes them from socks when an agent this
// one replaces handed them over. With port 0, TCP takes the port UDP got, and a
// few ports are tried in case another process holds that one for TCP.
func bind(ap netip.AddrPort, socks *handoff.Sockets) (sockets, error) {
	if ap.Port() != 0 {
		return bindFixed(ap, socks)
	}
	for try := 0; ; try++ {
		udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return sockets{}, fmt.Errorf("dns: %w", err)
		}
		got := udp.LocalAddr().(*net.UDPAddr).AddrPort()
		got = netip.AddrPortFrom(got.Addr().Unmap(), got.Port())
		tcp, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(got))
		if err == nil {
			return sockets{addr: got, udp: udp, tcp: tcp}, nil
		}
		_ = udp.Close()
		if ap.Port() != 0 || try == 10 {
			return sockets{}, fmt.Errorf("dns: %w", err)
		}
	}
}

// bindFixed opens UDP and TCP on ap, a fixed port, through socks.
func bindFixed(ap netip.AddrPort, socks *handoff.Sockets) (sockets, error) {
	pc, err := socks.ListenPacket("udp "+ap.String(), func() (net.PacketConn, error) {
		return net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	})
	if err != nil {
		return sockets{}, fmt.Errorf("dns: %w", err)
	}
	ln, err := socks.Listen("tcp "+ap.String(), func() (net.Listener, error) {
		return net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
	})
	if err != nil {
		pc.Close()
		return sockets{}, fmt.Errorf("dns: %w", err)
	}
	udp, uok := pc.(*net.UDPConn)
	tcp, tok := ln.(*net.TCPListener)
	if !uok || !tok {
		pc.Close()
		ln.Close()
		return sockets{}, fmt.Errorf("dns: the sockets handed over for %s are not UDP and TCP", ap)
	}
	return sockets{addr: ap, udp: udp, tcp: tcp}, nil
}

// searchDomains lowercases the domains and drops their dots at either end.
func searchDomains(in []string) []string {
	var out []string
	for _, d := range in {
		if d = strings.ToLower(strings.Trim(d, ".")); d != "" {
			out = append(out, d)
		}
	}
	return out
}

// Addr is the first address the proxy serves, with the port it got.
func (s *Server) Addr() netip.AddrPort { return s.sockets[0].addr }

// Addrs are all the addresses the proxy serves.
func (s *Server) Addrs() []netip.AddrPort {
	out := make([]netip.AddrPort, len(s.sockets))
	for i, so := range s.sockets {
		out[i] = so.addr
	}
	return out
}

// Run serves until ctx is done, then closes the sockets, cancels the queries
// still being answered and returns once every goroutine it started has ended.
func (s *Server) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("dns: Run called twice")
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errors.New("dns: Run after Close")
	}
	for _, so := range s.sockets {
		s.wg.Go(func() { s.serveUDP(so.udp) })
		s.wg.Go(func() { s.serveTCP(so.tcp) })
	}
	s.log.Info("dns: serving", "addrs", s.Addrs())
	<-ctx.Done()
	err := s.Close()
	s.wg.Wait()
	return err
}

// Close closes the sockets and the open TCP connections and cancels the queries
// being answered. Run calls it; call it directly only for a Server never run.
func (s *Server) Close() error {
	var errs []error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.cancel()
		for _, so := range s.sockets {
			errs = append(errs, so.udp.Close(), so.tcp.Close())
		}
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dns: close: %w", err)
	}
	return nil
}
