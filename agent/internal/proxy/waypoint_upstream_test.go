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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
)

// hostAddr is an address of the waypoints' host that none of them uses.
var hostAddr = netip.MustParseAddr("10.0.0.60")

// prodWaypoints are the waypoints of the tests, on this host: prod/waypoint
// (10.0.0.50) for the namespace, prod/api-wp (10.0.0.51) for the account "api".
func prodWaypoints() []*state.Waypoint {
	return []*state.Waypoint{
		{Name: "waypoint", Namespace: "prod", ServiceAccount: "waypoint", TrustDomain: "cluster.local",
			Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.50")}, Node: "wp-host", Local: true},
		{Name: "api-wp", Namespace: "prod", ServiceAccount: "api-wp", TrustDomain: "cluster.local",
			ForServiceAccount: "api", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.51")}, Node: "wp-host", Local: true},
	}
}

// gossiped is a workload as a node other than the waypoint's declares it.
func gossiped(name, ns, sa string, tunnel state.TunnelProtocol, addrs ...string) *state.Workload {
	w := &state.Workload{UID: "evil-node/" + ns + "/" + name, Name: name, Namespace: ns, ServiceAccount: sa,
		TrustDomain: "cluster.local", Node: "evil-node", Tunnel: tunnel, Healthy: true, Capacity: 1}
	for _, a := range addrs {
		w.Addresses = append(w.Addresses, netip.MustParseAddr(a))
	}
	return w
}

// service declares ns/name at vip, port 80 to target, backed by the workloads.
// Whatever the snapshot refuses of gossip, the waypoint must hold by itself:
// the declaration is istiod's, which the snapshot keeps as it is.
func service(ns, name, vip string, target uint16, useWaypoint string, ws ...*state.Workload) state.ServiceDecl {
	d := state.ServiceDecl{Node: state.IstiodNode, Origin: state.OriginIstiod, Name: name, Namespace: ns, Hostname: name + "." + ns + ".svc.cluster.local",
		VIPs: []netip.Addr{netip.MustParseAddr(vip)}, Ports: []state.ServicePort{{Port: 80, TargetPort: target}},
		UseWaypoint: useWaypoint}
	for _, w := range ws {
		d.Workloads = append(d.Workloads, w.UID)
	}
	return d
}

// refusingDialer records every plaintext dial and lets none through.
type refusingDialer struct {
	mu     sync.Mutex
	dialed []string
}

func (r *refusingDialer) dialer() *net.Dialer {
	return &net.Dialer{ControlContext: func(_ context.Context, _, address string, _ syscall.RawConn) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.dialed = append(r.dialed, address)
		return errors.New("blocked by test")
	}}
}

// waypointHarness is the inbound HBONE server's decision with recording dialers.
type waypointHarness struct {
	snap    *state.Snapshot
	h       *InboundHBONE
	plain   *refusingDialer
	tunnels *recordTunnels
}

func newWaypointHarness(snap *state.Snapshot) *waypointHarness {
	wh := &waypointHarness{snap: snap, plain: &refusingDialer{}, tunnels: &recordTunnels{}}
	wh.h = NewInboundHBONE(&Deps{
		Snap:    func() *state.Snapshot { return snap },
		Dialer:  wh.plain.dialer(),
		Tunnels: wh.tunnels,
		Metrics: telemetry.NewMetrics(prometheus.NewRegistry(), "test"),
		Access:  slog.New(slog.DiscardHandler),
		Log:     slog.New(slog.DiscardHandler),
		Policy:  func() *policy.Set { return nil },
		Live:    NewLive(),
		HostAddrs: func() []netip.Addr {
			return []netip.Addr{netip.MustParseAddr("10.0.0.50"), netip.MustParseAddr("10.0.0.51"), hostAddr}
		},
	}, nil)
	return wh
}

// connect sends CONNECT target to the waypoint at `at` from a mesh client and,
// when it is allowed, makes the upstream connection as the waypoint does. It
// returns the flag of a refusal, and the refusal's or the dial's error.
func (wh *waypointHarness) connect(at, target string) (hbone.Flag, error) {
	t := netip.MustParseAddrPort(target)
	req := &hbone.Request{PeerIdentity: spiffeid.RequireFromString("spiffe://cluster.local/ns/anywhere/sa/client"),
		LocalAddr: netip.AddrPortFrom(netip.MustParseAddr(at), HBONEPort), RemoteAddr: netip.MustParseAddrPort("10.0.0.1:40000"),
		Target: hbone.Authority{Addr: t, Port: t.Port()}}
	call, _, err := wh.decide(req)
	if err != nil {
		return hbone.FlagOf(err), err
	}
	_, err = wh.h.forwardCall(context.Background(), wh.snap, call, &inboundTunnel{})
	return hbone.FlagNone, err
}

// decide runs the waypoint's authorization of req as ServeHBONE does; a
// refusal's error carries its flag.
func (wh *waypointHarness) decide(req *hbone.Request) (waypointCall, *inboundTunnel, error) {
	wp, ok := wh.snap.WaypointByAddr(req.LocalAddr.Addr())
	if !ok {
		return waypointCall{}, nil, errors.New("no waypoint at " + req.LocalAddr.String())
	}
	t := &inboundTunnel{}
	call, flag, err := wh.h.authorizeWaypoint(req, wh.snap, wp, t)
	if err != nil {
		return call, t, &hbone.Error{Flag: flag, Err: err}
	}
	return call, t, nil
}

// A waypoint is never an open proxy: whatever gossip declares behind a service
// or a workload it manages, it forwards only over HBONE, to captured workloads
// of its scope, at addresses that are a remote workload's (or a local one's),
// on ports that are not the agent's own. Refusals are decided before anything
// is dialed.
func TestWaypointRefusesUnsafeUpstreams(t *testing.T) {
	local := gossiped("local", "prod", "app", state.TunnelHBONE, hostAddr.String())
	local.UID, local.Node, local.Local = "wp-host/prod/local", "wp-host", true
	cases := []struct {
		name   string
		at     string // the waypoint address the tunnel arrives on
		target string
		ws     []*state.Workload
		svc    []int      // indexes into ws backing the service at 192.0.2.80 (nil: no service)
		ns     string     // the service's namespace
		use    string     // its use_waypoint ("": prod/waypoint, by name)
		port   uint16     // its target port
		flag   hbone.Flag // refused at authorization with this flag
		reason string     // refused (when dialing unless flag is set), naming this
	}{
		{name: "plaintext endpoint at the metadata address", target: "192.0.2.80:80", svc: []int{0},
			ws:     []*state.Workload{gossiped("meta", "prod", "app", state.TunnelNone, "169.254.169.254")},
			reason: "endpoint 169.254.169.254:80 of service prod/ssrf is not a captured workload (plaintext refused)"},
		{name: "the finding: a service of another namespace names the waypoint", target: "192.0.2.80:80", svc: []int{0},
			ns: "evil", use: "prod/waypoint", flag: hbone.FlagWrongTarget,
			reason: "service evil/ssrf names waypoint prod/waypoint of another namespace",
			ws:     []*state.Workload{gossiped("meta", "evil", "app", state.TunnelNone, "169.254.169.254")}},
		{name: "HBONE endpoint at the metadata address", target: "192.0.2.80:80", svc: []int{0},
			ws:     []*state.Workload{gossiped("meta", "prod", "app", state.TunnelHBONE, "169.254.169.254")},
			reason: "is the cloud metadata address"},
		{name: "HBONE endpoint at the IPv6 metadata address", target: "192.0.2.80:80", svc: []int{0},
			ws:     []*state.Workload{gossiped("meta6", "prod", "app", state.TunnelHBONE, "fd00:ec2::254")},
			reason: "is the cloud metadata address"},
		{name: "HBONE endpoint at a link-local address", target: "192.0.2.80:80", svc: []int{0},
			ws:     []*state.Workload{gossiped("ll", "prod", "app", state.TunnelHBONE, "169.254.10.1")},
			reason: "is a link-local address"},
		{name: "HBONE endpoint at an IPv6 link-local address", target: "192.0.2.80:80", svc: []int{0},
			ws:     []*state.Workload{gossiped("ll6", "prod", "app", state.TunnelHBONE, "fe80::1")},
			reason: "is a link-local address"},
		{name: "HBONE endpoint at loopback", target: "192.0.2.80:80", svc: []int{0},
			ws:     []*state.Workload{gossiped("lo", "prod", "app", state.TunnelHBONE, "127.0.0.1")},
			reason: "is a loopback address"},
		{name: "HBONE endpoint at a multicast address", target: "192.0.2.80:80", svc: []int{0},
			ws:     []*state.Workload{gossiped("mc", "prod", "app", state.TunnelHBONE, "224.0.0.1")},
			reason: "is a multicast address"},
		{name: "HBONE endpoint at the unspecified address", target: "192.0.2.80:80", svc: []int{0},
			ws:     []*state.Workload{gossiped("any", "prod", "app", state.TunnelHBONE, "0.0.0.0")},
			reason: "is an unspecified address"},
		{name: "HBONE endpoint at NAT64 of the metadata address", target: "192.0.2.80:80", svc: []int{0},
			ws:     []*state.Workload{gossiped("n64", "prod", "app", state.TunnelHBONE, "64:ff9b::a9fe:a9fe")},
			reason: "is the cloud metadata address"},
		{name: "HBONE endpoint at a host address, not a local workload", target: "192.0.2.80:80", svc: []int{0},
			ws:     []*state.Workload{gossiped("squat", "prod", "app", state.TunnelHBONE, hostAddr.String())},
			reason: "is an address of this host, and workload evil-node/prod/squat does not run here"},
		{name: "HBONE endpoint at the waypoint's own address", target: "192.0.2.80:80", svc: []int{0},
			ws:     []*state.Workload{gossiped("self", "prod", "app", state.TunnelHBONE, "10.0.0.50")},
			reason: "is an address of waypoint prod/waypoint on this host"},
		{name: "HBONE endpoint on the agent's HBONE port", target: "192.0.2.80:80", svc: []int{0}, port: 15008,
			ws:     []*state.Workload{gossiped("loop", "prod", "app", state.TunnelHBONE, "10.0.0.11")},
			reason: "is on port 15008, one of the agent's own"},
		{name: "HBONE endpoint of another namespace", target: "192.0.2.80:80", svc: []int{0},
			ws:     []*state.Workload{gossiped("far", "other", "app", state.TunnelHBONE, "10.0.0.13")},
			reason: "is workload evil-node/other/far of namespace other, outside the scope of waypoint prod/waypoint"},
		{name: "service-account waypoint: endpoint of another account", at: "10.0.0.51", use: "api-wp",
			target: "192.0.2.80:80", svc: []int{0},
			ws:     []*state.Workload{gossiped("db", "prod", "db", state.TunnelHBONE, "10.0.0.14")},
			reason: "outside the scope of waypoint prod/api-wp"},
		{name: "only bad endpoints: every one refused", target: "192.0.2.80:80", svc: []int{0, 1},
			ws: []*state.Workload{gossiped("meta", "prod", "app", state.TunnelNone, "169.254.169.254"),
				gossiped("lo", "prod", "app", state.TunnelHBONE, "127.0.0.1")},
			reason: "not a captured workload (plaintext refused) (and 1 more endpoints refused)"},
		{name: "workload target of another namespace naming a waypoint of its own namespace", target: "10.0.0.13:8080",
			ws:   []*state.Workload{withWaypoint(gossiped("far", "other", "app", state.TunnelHBONE, "10.0.0.13"), "waypoint")},
			flag: hbone.FlagWrongTarget, reason: "is not a service or workload managed by waypoint prod/waypoint"},
		{name: "workload target at loopback", target: "127.0.0.2:22",
			ws:     []*state.Workload{withWaypoint(gossiped("lo", "prod", "app", state.TunnelHBONE, "127.0.0.2"), "waypoint")},
			reason: "waypoint: target 127.0.0.2:22 (workload evil-node/prod/lo) is a loopback address"},
		{name: "plaintext workload target", target: "10.0.0.12:8080",
			ws:   []*state.Workload{withWaypoint(gossiped("plain", "prod", "app", state.TunnelNone, "10.0.0.12"), "waypoint")},
			flag: hbone.FlagWrongTarget, reason: "is not a service or workload managed by waypoint prod/waypoint"},
		{name: "a local workload at a host address forwards", target: "192.0.2.80:80", svc: []int{0},
			ws: []*state.Workload{local}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := state.Input{Workloads: tc.ws, Waypoints: prodWaypoints()}
			if tc.svc != nil {
				ns, port, use := tc.ns, tc.port, tc.use
				if ns == "" {
					ns = "prod"
				}
				if use == "" {
					use = "waypoint"
				}
				if port == 0 {
					port = 80
				}
				var backing []*state.Workload
				for _, i := range tc.svc {
					backing = append(backing, tc.ws[i])
				}
				in.Services = []state.ServiceDecl{service(ns, "ssrf", "192.0.2.80", port, use, backing...)}
			}
			at := tc.at
			if at == "" {
				at = "10.0.0.50"
			}
			wh := newWaypointHarness(state.Build(1, in))
			refused, err := wh.connect(at, tc.target)
			switch {
			case tc.flag != hbone.FlagNone:
				if refused != tc.flag || err == nil || !strings.Contains(err.Error(), tc.reason) {
					t.Errorf("decision %q (%v), want refused %s naming %q before anything is dialed", refused, err, tc.flag, tc.reason)
				}
			case tc.reason != "":
				if refused != hbone.FlagNone || err == nil || !strings.Contains(err.Error(), tc.reason) {
					t.Errorf("refuse %q, err %v: want the dial refused naming %q", refused, err, tc.reason)
				}
			case err == nil || err.Error() != "recorded" || len(wh.tunnels.got) != 1:
				t.Errorf("refuse %q, err %v, tunnels %+v: want one HBONE tunnel", refused, err, wh.tunnels.got)
			}
			if len(wh.plain.dialed) > 0 {
				t.Errorf("the waypoint dialed %v in plaintext", wh.plain.dialed)
			}
			if tc.reason != "" || tc.flag != hbone.FlagNone {
				if len(wh.tunnels.got) > 0 {
					t.Errorf("the waypoint opened tunnels %+v", wh.tunnels.got)
				}
			}
		})
	}
}

func withWaypoint(w *state.Workload, ref string) *state.Workload {
	w.UseWaypoint = ref
	return w
}

// A legitimate service in scope still forwards: over HBONE to its captured
// endpoint, as the waypoint, expecting the endpoint's identity; an endpoint
// the waypoint must refuse never wins the draw, whatever its capacity.
func TestWaypointForwardsToCapturedEndpointsInScope(t *testing.T) {
	good := gossiped("api", "prod", "api", state.TunnelHBONE, "10.0.0.11")
	bad := gossiped("meta", "prod", "app", state.TunnelNone, "169.254.169.254")
	bad.Capacity = 1000
	snap := state.Build(1, state.Input{
		Workloads: []*state.Workload{good, bad},
		Services:  []state.ServiceDecl{service("prod", "api", "192.0.2.80", 8080, "waypoint", good, bad)},
		Waypoints: prodWaypoints(),
	})
	for range 20 {
		wh := newWaypointHarness(snap)
		if _, err := wh.connect("10.0.0.50", "192.0.2.80:80"); err == nil || err.Error() != "recorded" {
			t.Fatalf("dial: %v, want the recorded tunnel", err)
		}
		if len(wh.plain.dialed) > 0 {
			t.Fatalf("the waypoint dialed %v in plaintext", wh.plain.dialed)
		}
		if len(wh.tunnels.got) != 1 {
			t.Fatalf("tunnels %+v, want one", wh.tunnels.got)
		}
		got := wh.tunnels.got[0]
		if got.Gateway != ap("10.0.0.11:15008") || got.Authority != "10.0.0.11:8080" ||
			got.Source.String() != "spiffe://cluster.local/ns/prod/sa/waypoint" ||
			len(got.Expected) != 1 || got.Expected[0].String() != "spiffe://cluster.local/ns/prod/sa/api" ||
			got.ForwardedFor != ap("10.0.0.1:40000") {
			t.Fatalf("tunnel %+v: want 10.0.0.11:8080 through 10.0.0.11:15008, as prod/waypoint, expecting prod/api", got)
		}
	}
}
