package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
)

var gatewayID = spiffeid.RequireFromString("spiffe://cluster.local/ns/istio-system/sa/eastwest")

// gatewayFixture is net-b's gateway at 127.0.0.2 and what it knows: service web has one endpoint it may pick (b1
// at 192.0.2.11) among endpoints on another network, in plaintext, at loopback, at the gateway's own address and at
// net-c's gateway's address; only-a has endpoints on net-a only. dial is the gateway's dialer.
func gatewayFixture(t testing.TB, ids identity.Source, dial func(address string) error) *InboundHBONE {
	workload := func(name, network, addr string, tunnel state.TunnelProtocol) *state.Workload {
		return &state.Workload{UID: "other/shop/" + name, Name: name, Namespace: "shop", ServiceAccount: name, TrustDomain: "cluster.local",
			Node: "other", Tunnel: tunnel, Healthy: true, Capacity: 1, Network: network, Addresses: []netip.Addr{netip.MustParseAddr(addr)}}
	}
	ws := []*state.Workload{
		workload("b1", "net-b", "192.0.2.11", state.TunnelHBONE), // the only one the gateway may pick
		workload("a1", "net-a", "192.0.2.21", state.TunnelHBONE), // another network
		workload("b2", "net-b", "192.0.2.12", state.TunnelNone),  // plaintext
		workload("b3", "net-b", "127.0.0.5", state.TunnelHBONE),  // loopback
		workload("b4", "net-b", "127.0.0.2", state.TunnelHBONE),  // the gateway's own address
		workload("b5", "net-b", "192.0.2.50", state.TunnelHBONE), // net-c's gateway: a loop between gateways
		workload("a2", "net-a", "192.0.2.22", state.TunnelHBONE),
	}
	svc := func(name string, uids ...string) state.ServiceDecl {
		return state.ServiceDecl{Node: "other", Name: name, Namespace: "shop", Hostname: name + ".shop.svc.cluster.local",
			Ports: []state.ServicePort{{Port: 80, TargetPort: 8080}}, Workloads: uids}
	}
	snap := state.Build(1, state.Input{Workloads: ws, Services: []state.ServiceDecl{
		svc("web", "other/shop/b1", "other/shop/a1", "other/shop/b2", "other/shop/b3", "other/shop/b4", "other/shop/b5"),
		svc("only-a", "other/shop/a2"),
		svc("loop", "other/shop/b5"),
	}, Gateways: []*state.NetworkGateway{{Network: "net-c", Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.50")},
		Identity: "spiffe://cluster.local/ns/istio-system/sa/eastwest", Origin: state.OriginConfig}},
		Limits: state.Limits{Domains: []string{"cluster.local"}}})
	if c := snap.ServiceConflicts(); len(c) > 0 {
		t.Fatalf("service conflicts: %v", c)
	}
	dialer := &net.Dialer{Control: func(_, address string, _ syscall.RawConn) error { return dial(address) }}
	return NewInboundHBONE(&Deps{
		Snap:    func() *state.Snapshot { return snap },
		Dialer:  dialer,
		Metrics: telemetry.NewMetrics(prometheus.NewRegistry(), "test"),
		Access:  slog.New(slog.DiscardHandler),
		Log:     slog.New(slog.DiscardHandler),
		Warn:    telemetry.NewLimiter(time.Second),
		Policy:  func() *policy.Set { return nil },
		Live:    NewLive(),
		Gateway: &GatewayRole{Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.2")}, Identity: gatewayID, Network: "net-b"},
	}, ids)
}

// The gateway role picks, for a service hostname, an endpoint on its own network that is a captured workload at
// an address it may reach, and connects to that endpoint's HBONE port; it refuses address targets (its own ports
// among them), unknown services and ports, services with no endpoint on its network, endpoints at another
// gateway's address, and outer tunnels that carry a client network. It presents its own identity. (The relay
// itself, across real networks, is the lab's: a unit test has only loopback, which the gateway never forwards to.)
func TestGatewayRole(t *testing.T) {
	ids := testIdentities(t, gatewayID, sleepID)
	var mu sync.Mutex
	var dialed []string
	h := gatewayFixture(t, ids, func(address string) error {
		mu.Lock()
		dialed = append(dialed, address)
		mu.Unlock()
		return errors.New("test: not connected")
	})
	srv, err := hbone.NewServer(hbone.ServerConfig{Certificate: h.Certificate, Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	pool := hbone.NewPool(hbone.PoolConfig{TLS: ClientTLS(ids)})
	t.Cleanup(func() { pool.Close(); srv.Close() })
	gw := ln.Addr().(*net.TCPAddr).AddrPort()
	dial := func(authority, network string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := pool.Dial(ctx, hbone.Tunnel{Source: sleepID, Expected: []spiffeid.ID{gatewayID}, Gateway: gw,
			Authority: authority, ForwardedNetwork: network})
		if err == nil {
			st.Close()
		}
		return err
	}

	for range 20 {
		if err := dial("web.shop.svc.cluster.local:80", ""); err == nil || !strings.Contains(err.Error(), "503") {
			t.Fatalf("web through the gateway: %v, want the 503 of a refused upstream connect", err)
		}
	}
	mu.Lock()
	got := append([]string(nil), dialed...)
	mu.Unlock()
	if len(got) != 20 {
		t.Errorf("the gateway dialed %d times for 20 tunnels: %v", len(got), got)
	}
	for _, a := range got {
		if a != "192.0.2.11:15008" {
			t.Errorf("the gateway dialed %s, want only 192.0.2.11:15008 (b1's HBONE port)", a)
		}
	}
	for _, tc := range []struct{ authority, network, status string }{
		{"192.0.2.11:8080", "", "400"},                    // an address: never an open proxy
		{"nothing.shop.svc.cluster.local:80", "", "400"},  // no such service
		{"web.shop.svc.cluster.local:81", "", "503"},      // not a service port
		{"only-a.shop.svc.cluster.local:80", "", "503"},   // no endpoint on this network
		{"web.shop.svc.cluster.local:80", "net-a", "400"}, // an outer tunnel with a client network
		{"127.0.0.2:15008", "", "503"},                    // the agent's own ports: ILLEGAL_PORT, for any target
		{"web.shop.svc.cluster.local:15008", "", "503"},
		{"127.0.0.2:15000", "", "400"},                // another port of the gateway's own address: an address
		{"loop.shop.svc.cluster.local:80", "", "503"}, // an endpoint at another network's gateway
	} {
		if err := dial(tc.authority, tc.network); err == nil || !strings.Contains(err.Error(), tc.status) {
			t.Errorf("%s (network %q): %v, want a %s", tc.authority, tc.network, err, tc.status)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dialed) != 20 {
		t.Errorf("refused tunnels dialed: %v", dialed[20:])
	}
}

// FuzzGatewayTarget: whatever authority and client network an outer tunnel names, the gateway either refuses it
// or goes to the one endpoint it may reach (b1's HBONE port), for service web's port 80 and no client network.
func FuzzGatewayTarget(f *testing.F) {
	for _, seed := range [][2]string{
		{"web.shop.svc.cluster.local:80", ""}, {"web.shop.svc.cluster.local:80", "net-a"}, {"192.0.2.11:15008", ""},
		{"127.0.0.2:15008", ""}, {"loop.shop.svc.cluster.local:80", ""}, {"WEB.shop.svc.cluster.local.:80", ""},
		{"[::ffff:192.0.2.11]:15008", ""}, {"only-a.shop.svc.cluster.local:80", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	h := gatewayFixture(f, testIdentities(f, gatewayID, sleepID), func(string) error { return errors.New("test: never dialed") })
	snap := h.d.Snap()
	f.Fuzz(func(t *testing.T, authority, network string) {
		target, err := hbone.ParseAuthority(authority)
		if err != nil {
			return
		}
		r := &hbone.Request{Target: target, LocalAddr: ap("127.0.0.2:15008"), RemoteAddr: ap("192.0.2.99:40000"),
			PeerIdentity: sleepID}
		if network != "" {
			r.Headers = []hbone.Header{{Name: forwardedNetworkHeader, Value: network}}
		}
		_, up, _, err := h.gatewayUpstream(r, snap, &inboundTunnel{})
		if err != nil {
			return
		}
		if up != ap("192.0.2.11:15008") || target.Host != "web.shop.svc.cluster.local" || target.Port != 80 || network != "" {
			t.Fatalf("%q (network %q) went to %s", authority, network, up)
		}
	})
}
