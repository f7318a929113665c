package proxy

import (
	"net/netip"
	"testing"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// networkSnapshot: a local client on net-a; service web with one endpoint on net-a and two on net-b (whose
// gateway is known), service far with endpoints on net-b and net-c (no gateway known) only.
func networkSnapshot(t *testing.T) *state.Snapshot {
	t.Helper()
	mk := func(uid, sa, network, addr string, local bool) *state.Workload {
		return &state.Workload{UID: uid, Name: uid, Namespace: "default", ServiceAccount: sa, TrustDomain: "cluster.local",
			Addresses: []netip.Addr{netip.MustParseAddr(addr)}, Tunnel: state.TunnelHBONE, Local: local, Healthy: true,
			Capacity: 1, Network: network, Origin: state.OriginConfig}
	}
	ws := []*state.Workload{
		mk("client", "client", "net-a", "10.1.0.1", true),
		mk("web-a", "web", "net-a", "10.1.0.5", false),
		mk("web-b1", "web", "net-b", "10.2.0.5", false),
		mk("web-b2", "web", "net-b", "10.2.0.6", false),
		mk("far-c", "far", "net-c", "10.3.0.5", false),
		mk("far-b", "far", "net-b", "10.2.0.7", false),
	}
	svc := func(name, vip string, uids ...string) state.ServiceDecl {
		return state.ServiceDecl{Node: "n", Name: name, Namespace: "default", Hostname: name + ".default.svc.cluster.local",
			VIPs: []netip.Addr{netip.MustParseAddr(vip)}, Ports: []state.ServicePort{{Port: 80, TargetPort: 8080}}, Workloads: uids,
			Origin: state.OriginConfig}
	}
	snap := state.Build(1, state.Input{Workloads: ws, Services: []state.ServiceDecl{
		svc("web", "240.240.0.10", "web-a", "web-b1", "web-b2"),
		svc("far", "240.240.0.11", "far-c"),
	}, Gateways: []*state.NetworkGateway{{Network: "net-b", Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.2")},
		Identity: "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway", Origin: state.OriginConfig}}})
	if c := snap.ServiceConflicts(); len(c) > 0 {
		t.Fatalf("service conflicts: %v", c)
	}
	return snap
}

// A service's endpoints on another network are reached by double HBONE through that network's gateway, and
// weigh as much as the local ones; endpoints of a network without a known gateway are never picked; a workload
// of another network addressed directly is not reached.
func TestRoutesAcrossNetworks(t *testing.T) {
	snap := networkSnapshot(t)
	client, _ := snap.WorkloadByUID("client")
	src := ap("10.1.0.1:40000")
	counts := map[string]int{}
	for i := range 3 {
		r := decideOutbound(snap, client, src, ap("240.240.0.10:80"), func(n int) int { return i % n })
		if r.Kind != RouteHBONE || r.Dest == nil {
			t.Fatalf("web, pick %d: %s (%s)", i, r.Kind, r.Reason)
		}
		counts[r.Dest.Network]++
		switch r.Dest.Network {
		case "net-a":
			if r.Outer != nil || r.Gateway != ap("10.1.0.5:15008") {
				t.Errorf("the endpoint on the client's network: %+v, want direct HBONE", r)
			}
		case "net-b":
			want := "spiffe://cluster.local/ns/default/sa/web"
			if r.Outer == nil || r.Outer.Gateway != ap("192.0.2.2:15008") || r.Network != "net-a" ||
				r.Outer.Expected[0].String() != "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway" ||
				len(r.Expected) != 1 || r.Expected[0].String() != want {
				t.Errorf("an endpoint on net-b: %+v (outer %+v), want double HBONE through 192.0.2.2 expecting %s", r, r.Outer, want)
			}
		}
	}
	if counts["net-a"] != 1 || counts["net-b"] != 2 {
		t.Errorf("picks by network %v, want one of net-a and two of net-b (capacity 1 each)", counts)
	}
	if r := decideOutbound(snap, client, src, ap("240.240.0.11:80"), func(int) int { return 0 }); r.Kind != RouteDrop {
		t.Errorf("far, whose only endpoint is on a network without a gateway: %s, want a drop", r.Kind)
	}
	if r := decideOutbound(snap, client, src, ap("10.2.0.5:8080"), func(int) int { return 0 }); r.Kind != RouteDrop {
		t.Errorf("a workload of net-b by address: %s, want a drop (services only across networks)", r.Kind)
	}
}
