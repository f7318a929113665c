package proxy

import (
	"context"
	"net/netip"
	"testing"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
)

// trafficSnapshot: a local client in namespace "app" and an istiod service
// "se" (VIP 10.96.5.1, port 80 to 8080) backed by one captured workload.
func trafficSnapshot(tr state.Traffic, waypoints ...*state.Waypoint) *state.Snapshot {
	client := &state.Workload{UID: "client", Name: "client", Namespace: "app", ServiceAccount: "client", TrustDomain: "cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Tunnel: state.TunnelHBONE, Local: true, Healthy: true, Capacity: 1,
		Origin: state.OriginConfig}
	ep := &state.Workload{UID: "ep", Name: "ep", Namespace: "ext", ServiceAccount: "ep", TrustDomain: "cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.21")}, Tunnel: state.TunnelHBONE, Healthy: true, Capacity: 1,
		Origin: state.OriginIstiod}
	d := state.ServiceDecl{Node: state.IstiodNode, Origin: state.OriginIstiod, Name: "se", Namespace: "ext", Hostname: "se.example.com",
		VIPs: []netip.Addr{netip.MustParseAddr("10.96.5.1")}, Ports: []state.ServicePort{{Port: 80, TargetPort: 8080}},
		Workloads: []string{"ep"}, UseWaypoint: "none", Traffic: tr}
	for _, wp := range waypoints {
		d.UseWaypoint = wp.Name
	}
	return state.Build(1, state.Input{Workloads: []*state.Workload{client, ep}, Services: []state.ServiceDecl{d}, Waypoints: waypoints})
}

func TestServiceTrafficFields(t *testing.T) {
	first := func(int) int { return 0 }
	vip := ap("10.96.5.1:80")

	// subjectAltNames: the endpoint may present the service's SAN too.
	r := decide(trafficSnapshot(state.Traffic{SubjectAltNames: []string{"spiffe://cluster.local/ns/ext/sa/se-san"}}), ap("10.0.0.1:5000"), vip, first)
	if r.Kind != RouteHBONE || len(r.Expected) != 2 || r.Expected[0].String() != "spiffe://cluster.local/ns/ext/sa/ep" ||
		r.Expected[1].String() != "spiffe://cluster.local/ns/ext/sa/se-san" {
		t.Errorf("SANs: %+v, want the endpoint's identity and the SAN", r)
	}

	// resolution NONE: to the address the client dialled, as if not captured.
	r = decide(trafficSnapshot(state.Traffic{LoadBalancing: &state.LoadBalancing{Mode: state.LBPassthrough}}), ap("10.0.0.1:5000"), vip, first)
	if r.Kind != RoutePassthrough || r.Target != vip || r.Service == nil {
		t.Errorf("passthrough: %+v", r)
	}

	// visibility NAMESPACE: a client of another namespace does not see it.
	r = decide(trafficSnapshot(state.Traffic{NamespaceOnly: true}), ap("10.0.0.1:5000"), vip, first)
	if r.Service != nil || r.Kind != RoutePassthrough {
		t.Errorf("a NAMESPACE service from another namespace: %+v, want the VIP unknown", r)
	}

	// A weighted split: the second waypoint for the draw past the first's weight.
	stable := &state.Waypoint{Name: "stable", Namespace: "ext", ServiceAccount: "stable", TrustDomain: "cluster.local", Node: "w1",
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.9.1")}, Origin: state.OriginIstiod}
	canary := &state.Waypoint{Name: "canary", Namespace: "ext", ServiceAccount: "canary", TrustDomain: "cluster.local", Node: "w2",
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.9.2")}, Origin: state.OriginIstiod}
	snap := trafficSnapshot(state.Traffic{WeightedWaypoints: []state.WeightedWaypoint{{Waypoint: "stable", Weight: 9}, {Waypoint: "canary", Weight: 1}}}, canary, stable)
	if r := decide(snap, ap("10.0.0.1:5000"), vip, func(n int) int { return n - 1 }); r.Waypoint == nil || r.Waypoint.Name != "canary" || r.Target != vip {
		t.Errorf("weighted, last draw: %+v, want canary with the VIP as target", r)
	}
	if r := decide(snap, ap("10.0.0.1:5000"), vip, first); r.Waypoint == nil || r.Waypoint.Name != "stable" {
		t.Errorf("weighted, first draw: %+v, want stable", r)
	}
	// The canary waypoint calling the service is not sent back to a waypoint of the split.
	if r := decide(snap, ap("10.0.9.2:5000"), vip, first); r.Waypoint != nil {
		t.Errorf("from the canary: %+v, want no waypoint", r)
	}
}

// A DNS ServiceEntry's host is a workload with a hostname and no address:
// the route carries the name, resolved when the agent connects.
func TestHostnameEndpoint(t *testing.T) {
	host := &state.Workload{UID: "dns-ep", Name: "api.example.com", Namespace: "ext", TrustDomain: "cluster.local", ServiceAccount: "default",
		Hostname: "api.example.com", Tunnel: state.TunnelNone, Healthy: true, Capacity: 1, Origin: state.OriginIstiod}
	d := state.ServiceDecl{Node: state.IstiodNode, Origin: state.OriginIstiod, Name: "api", Namespace: "ext", Hostname: "api.example.com",
		VIPs: []netip.Addr{netip.MustParseAddr("240.240.0.9")}, Ports: []state.ServicePort{{Port: 443, TargetPort: 443}},
		Workloads: []string{"dns-ep"}, UseWaypoint: "none"}
	snap := state.Build(1, state.Input{Workloads: []*state.Workload{host}, Services: []state.ServiceDecl{d}})
	r := decide(snap, ap("10.0.0.1:5000"), ap("240.240.0.9:443"), func(int) int { return 0 })
	if r.Kind != RoutePlain || r.Hostname != "api.example.com" || r.Target.Port() != 443 || r.Target.Addr().IsValid() {
		t.Fatalf("route %+v, want plaintext to api.example.com:443, resolved later", r)
	}
}

func TestResolvePicksAUsableAnswer(t *testing.T) {
	// Loopback, unspecified, the metadata address, link-local, multicast and
	// this host's own address are never used, whatever DNS says.
	answers := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::"), netip.MustParseAddr("169.254.169.254"),
		netip.MustParseAddr("fe80::1"), netip.MustParseAddr("224.0.0.1"), netip.MustParseAddr("10.0.0.1"),
		netip.MustParseAddr("2001:db8::5"), netip.MustParseAddr("192.0.2.5")}
	d := &Deps{Resolve: func(context.Context, string) ([]netip.Addr, error) { return answers, nil },
		HostAddrs: func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("10.0.0.1")} }}
	for range 20 {
		if a, err := d.resolve(context.Background(), "h", true); err != nil || a != netip.MustParseAddr("192.0.2.5") {
			t.Fatalf("v4 caller: %v %v", a, err)
		}
		if a, err := d.resolve(context.Background(), "h", false); err != nil || a != netip.MustParseAddr("2001:db8::5") {
			t.Fatalf("v6 caller: %v %v", a, err)
		}
	}
	answers = answers[:6]
	if a, err := d.resolve(context.Background(), "h", true); err == nil {
		t.Fatalf("only answers that are never a remote workload's: %v, want an error", a)
	}
	if _, err := (&Deps{}).resolve(context.Background(), "h", true); err == nil {
		t.Fatal("no resolver: want an error")
	}
}

// A CIDR VIP: an address in the range that is no workload's goes to the
// service; a workload inside it is reached as itself; the longest prefix
// wins, then the client's namespace.
func TestCIDRVIPs(t *testing.T) {
	wide := trafficSnapshot(state.Traffic{VIPRanges: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}})
	if r := decide(wide, ap("10.0.0.1:5000"), ap("10.0.77.7:80"), func(int) int { return 0 }); r.Service == nil || r.Target != ap("10.0.0.21:8080") {
		t.Errorf("an address in the range: %+v, want the service's endpoint", r)
	}
	if r := decide(wide, ap("10.0.0.1:5000"), ap("10.0.0.21:8080"), func(int) int { return 0 }); r.Service != nil || r.Dest == nil || r.Dest.UID != "ep" {
		t.Errorf("a workload in the range: %+v, want the workload itself", r)
	}
	if r := decide(wide, ap("10.0.0.1:5000"), ap("10.1.0.1:80"), func(int) int { return 0 }); r.Kind != RoutePassthrough || r.Service != nil {
		t.Errorf("outside the range: %+v", r)
	}
	svc := func(name, ns, prefix string) state.ServiceDecl {
		return state.ServiceDecl{Node: state.IstiodNode, Origin: state.OriginIstiod, Name: name, Namespace: ns, Hostname: name + "." + ns,
			Ports: []state.ServicePort{{Port: 80, TargetPort: 80}}, UseWaypoint: "none",
			Traffic: state.Traffic{VIPRanges: []netip.Prefix{netip.MustParsePrefix(prefix)}}}
	}
	snap := state.Build(1, state.Input{Services: []state.ServiceDecl{svc("a16", "other", "10.9.0.0/16"), svc("b24", "other", "10.9.1.0/24"),
		svc("c24", "app", "10.9.1.0/24")}})
	for _, tc := range []struct{ addr, ns, want string }{
		{"10.9.200.1", "app", "a16"}, {"10.9.1.1", "other", "b24"}, {"10.9.1.1", "app", "c24"},
	} {
		if got, ok := snap.ServiceByRange(netip.MustParseAddr(tc.addr), tc.ns); !ok || got.Name != tc.want {
			t.Errorf("%s from %s: %v, want %s", tc.addr, tc.ns, got, tc.want)
		}
	}
}

// A captured connection from the address of a waypoint instance on this host
// is a local process's (the waypoint role's own connections are never
// captured): it does not skip the waypoint.
func TestLocalWaypointAddressDoesNotSkipTheWaypoint(t *testing.T) {
	wp := &state.Waypoint{Name: "wp", Namespace: "ext", ServiceAccount: "wp", TrustDomain: "cluster.local", Node: "this-host",
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.9.1")}, Origin: state.OriginConfig, Local: true}
	snap := trafficSnapshot(state.Traffic{}, wp)
	if r := decide(snap, ap("10.0.9.1:5000"), ap("10.96.5.1:80"), func(int) int { return 0 }); r.Waypoint != wp {
		t.Errorf("from the local waypoint's address: %+v, want through the waypoint", r)
	}
}

// Every way hbone reports a tunnel's end maps into Istio's closed set of
// response flags: none of hbone's own names becomes a label value.
func TestIstioFlagIsAClosedSet(t *testing.T) {
	closed := map[telemetry.Flag]bool{telemetry.FlagNone: true, telemetry.FlagDeny: true, telemetry.FlagConnect: true, telemetry.FlagTLSFailure: true}
	for _, f := range []hbone.Flag{hbone.FlagNone, hbone.FlagConnect, hbone.FlagDial, hbone.FlagTLS, hbone.FlagReset, hbone.FlagProtocol,
		hbone.FlagTimeout, hbone.FlagBadRequest, hbone.FlagWrongTarget, hbone.FlagHeadersTooLarge, hbone.FlagDenied,
		hbone.FlagUnknownWorkload, hbone.FlagIllegalPort, hbone.FlagUnresolvable, hbone.FlagUpstreamConnect,
		hbone.FlagUpstreamTimeout, hbone.FlagOverloaded, hbone.FlagShutdown, hbone.FlagRevoked, hbone.FlagInternal, hbone.Flag("LATER")} {
		if got := istioFlag(f); !closed[got] {
			t.Errorf("hbone flag %q reports as %q, outside Istio's flags", f, got)
		}
	}
	if istioFlag(hbone.FlagRevoked) != telemetry.FlagDeny || istioFlag(hbone.FlagTLS) != telemetry.FlagTLSFailure {
		t.Error("revoked or TLS mapped wrong")
	}
}
