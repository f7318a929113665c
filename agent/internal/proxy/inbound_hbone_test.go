package proxy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/meshca"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
	"github.com/ambient-agent/ambient-agent/tests/leak"
)

var (
	webID   = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web")
	sleepID = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/sleep")
)

// inboundRig is the HBONE server with proxy's handler on loopback, for the local workload shop/web at
// 127.0.0.1 (an echo server), and a client pool presenting shop/sleep: real TLS, real HBONE.
type inboundRig struct {
	h    *InboundHBONE
	srv  *hbone.Server
	addr netip.AddrPort // the HBONE server
	echo netip.AddrPort // web's application
	pool *hbone.Pool
	ids  identity.Source
	reg  *prometheus.Registry
}

func newInboundRig(t *testing.T, set *policy.Set) *inboundRig {
	t.Helper()
	return newInboundRigWith(t, set, nil)
}

// newInboundRigWith is newInboundRig with the services services declares (given web's application address).
func newInboundRigWith(t *testing.T, set *policy.Set, services func(echo netip.AddrPort) []state.ServiceDecl) *inboundRig {
	t.Helper()
	ids := testIdentities(t, webID, sleepID)
	echo := echoListener(t)
	web := &state.Workload{UID: "this/shop/web", Name: "web", Namespace: "shop", ServiceAccount: "web", TrustDomain: "cluster.local",
		Node: "this", Local: true, Tunnel: state.TunnelHBONE, Healthy: true, Capacity: 1, Network: "net-b",
		Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	in := state.Input{Workloads: []*state.Workload{web}}
	if services != nil {
		in.Services = services(echo)
	}
	snap := state.Build(1, in)
	r := &inboundRig{ids: ids, echo: echo, reg: prometheus.NewRegistry()}
	r.h = NewInboundHBONE(&Deps{
		Snap:    func() *state.Snapshot { return snap },
		Dialer:  &net.Dialer{},
		Metrics: telemetry.NewMetrics(r.reg, "test"),
		Access:  slog.New(slog.DiscardHandler),
		Log:     slog.New(slog.DiscardHandler),
		Warn:    telemetry.NewLimiter(time.Second),
		Policy:  func() *policy.Set { return set },
		Live:    NewLive(),
	}, ids)
	srv, err := hbone.NewServer(hbone.ServerConfig{Certificate: r.h.Certificate, Handler: r.h})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	r.srv, r.addr = srv, ln.Addr().(*net.TCPAddr).AddrPort()
	r.pool = hbone.NewPool(hbone.PoolConfig{TLS: ClientTLS(ids)})
	t.Cleanup(func() {
		r.pool.Close()
		srv.Close()
		<-served
	})
	return r
}

// sum adds up the values of a counter family of the rig's metrics.
func (r *inboundRig) sum(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// dial opens a tunnel to target as shop/sleep, expecting shop/web.
func (r *inboundRig) dial(target netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.pool.Dial(ctx, hbone.Tunnel{Source: sleepID, Expected: []spiffeid.ID{webID}, Gateway: r.addr, Authority: target.String()})
}

// An inbound tunnel for the local workload goes from accept to relay and is recorded once, as opened and closed;
// one the policy denies is answered 401 and never reaches the workload; one for an address the connection did
// not arrive on is answered 400. Nothing is left running.
func TestInboundHBONEFromAcceptToRelay(t *testing.T) {
	noLeaks := leak.Check(t, leak.Options{})
	deny := loadPolicies(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-sleep, namespace: shop}
spec:
  action: DENY
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/sleep"]}}], to: [{operation: {ports: ["1"]}}]}]
`)
	t.Run("tunnels", func(t *testing.T) {
		r := newInboundRig(t, deny)
		c, err := r.dial(r.echo)
		if err != nil {
			t.Fatalf("tunnel to the local workload: %v", err)
		}
		msg := bytes.Repeat([]byte("hbone"), 10000)
		go func() { _, _ = c.Write(msg); _ = c.(interface{ CloseWrite() error }).CloseWrite() }()
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo through the tunnel: %d of %d bytes, %v", len(got), len(msg), err)
		}
		c.Close()

		denied := netip.AddrPortFrom(r.echo.Addr(), 1) // the policy denies port 1 to sleep
		if _, err := r.dial(denied); hbone.FlagOf(err) != hbone.FlagConnect || !strings.Contains(err.Error(), "401") {
			t.Errorf("denied tunnel: %v, want a 401", err)
		}
		if _, err := r.dial(netip.MustParseAddrPort("127.0.0.2:80")); err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("tunnel for another address: %v, want a 400", err)
		}
		waitUntil(t, "the tunnels recorded closed", func() bool {
			return r.sum(t, "istio_tcp_connections_closed_total") == 3 && r.h.d.Live.Len() == 0
		})
		if n := r.sum(t, "istio_tcp_connections_opened_total"); n != 3 {
			t.Errorf("%v connections recorded opened, want 3 (one relayed, two refused)", n)
		}
		if n := r.sum(t, "istio_tcp_received_bytes_total"); n != float64(len(msg)) {
			t.Errorf("%v bytes recorded received, want %d", n, len(msg))
		}
	})
	noLeaks()
}

// A tunnel to a service hostname (the inner CONNECT of double HBONE, through this network's gateway) reaches the
// local endpoint on its mapping of the service port, is authorized with the client's own identity, and is
// recorded with the service; the client's network does not make the gateway's address its source. Hostnames
// that are not services, services the workload does not back and ports it does not serve are refused.
func TestInboundHBONEServiceHostname(t *testing.T) {
	deny := loadPolicies(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-sleep-on-8443, namespace: shop}
spec:
  action: DENY
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/sleep"]}}], to: [{operation: {ports: ["8443"]}}]}]
`)
	r := newInboundRigWith(t, deny, func(echo netip.AddrPort) []state.ServiceDecl {
		return []state.ServiceDecl{
			{Node: "this", Local: true, Name: "web", Namespace: "shop", Hostname: "web.shop.svc.cluster.local",
				Ports: []state.ServicePort{{Port: 80, TargetPort: echo.Port()}, {Port: 443, TargetPort: 8443}, {Port: 9}}, Workloads: []string{"this/shop/web"}},
			{Node: "this", Local: true, Name: "other", Namespace: "shop", Hostname: "other.shop.svc.cluster.local",
				Ports: []state.ServicePort{{Port: 80, TargetPort: echo.Port()}}},
		}
	})
	dial := func(authority string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return r.pool.Dial(ctx, hbone.Tunnel{Source: sleepID, Expected: []spiffeid.ID{webID}, Gateway: r.addr,
			Authority: authority, ForwardedNetwork: "net-a"})
	}
	c, err := dial("web.shop.svc.cluster.local:80")
	if err != nil {
		t.Fatalf("tunnel to the service hostname: %v", err)
	}
	go func() { _, _ = c.Write([]byte("by name")); _ = c.(interface{ CloseWrite() error }).CloseWrite() }()
	if got, err := io.ReadAll(c); err != nil || string(got) != "by name" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	c.Close()
	for _, tc := range []struct{ authority, status string }{
		{"web.shop.svc.cluster.local:443", "401"},    // mapped to 8443, which the policy denies to sleep
		{"nothing.shop.svc.cluster.local:80", "400"}, // no such service
		{"other.shop.svc.cluster.local:80", "400"},   // web does not back it
		{"web.shop.svc.cluster.local:81", "503"},     // not a service port
		{"web.shop.svc.cluster.local:9", "503"},      // a service port without a target port
	} {
		if _, err := dial(tc.authority); err == nil || !strings.Contains(err.Error(), tc.status) {
			t.Errorf("%s: %v, want a %s", tc.authority, err, tc.status)
		}
	}
	waitUntil(t, "the tunnels recorded closed", func() bool { return r.sum(t, "istio_tcp_connections_closed_total") == 6 })
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "istio_tcp_received_bytes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			found = found || (l["destination_service"] == "web.shop.svc.cluster.local" &&
				l["source_principal"] == "spiffe://cluster.local/ns/shop/sa/sleep" && m.GetCounter().GetValue() == 7)
		}
	}
	if !found {
		t.Error("no istio_tcp_received_bytes_total of 7 bytes for the service with the client's principal")
	}
}

func loadPolicies(t *testing.T, yaml string) *policy.Set {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	set, _, err := policy.Load(dir, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// testIdentities issues certificates for ids from a fresh mesh CA and loads them as the files source does.
func testIdentities(t testing.TB, ids ...spiffeid.ID) identity.Source {
	t.Helper()
	dir := t.TempDir()
	ca, err := meshca.Init(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString("cluster.local"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	for _, id := range ids {
		svid, err := ca.Issue(id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := ca.WriteIdentity(out, svid); err != nil {
			t.Fatal(err)
		}
	}
	src, err := identity.New(identity.Options{Source: identity.SourceFiles, Dir: out, TrustDomain: ca.TrustDomain(), Identities: ids})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func echoListener(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
				_ = c.Close()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
