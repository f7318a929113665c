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

// istiod's per-network stand-in for a service's endpoints on another network has no address, only a capacity:
// it is picked by that capacity and reached through its gateway, on the gateway's own HBONE port, verifying
// the service's subject alt names.
func TestRoutesToAnAddresslessEndpointOfAnotherNetwork(t *testing.T) {
	client := &state.Workload{UID: "client", Name: "client", Namespace: "default", ServiceAccount: "client", TrustDomain: "cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("10.1.0.1")}, Tunnel: state.TunnelHBONE, Local: true, Healthy: true, Capacity: 1,
		Network: "net-a", Origin: state.OriginConfig}
	local := &state.Workload{UID: "api-a", Name: "api-a", Namespace: "default", ServiceAccount: "api", TrustDomain: "cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("10.1.0.5")}, Tunnel: state.TunnelHBONE, Healthy: true, Capacity: 1,
		Network: "net-a", Origin: state.OriginIstiod}
	standIn := &state.Workload{UID: "net-b/SplitHorizonWorkload/gw/default/api", Name: "x", Namespace: "default", ServiceAccount: "default",
		TrustDomain: "cluster.local", Tunnel: state.TunnelHBONE, Healthy: true, Capacity: 3, Network: "net-b", Origin: state.OriginIstiod}
	san := "spiffe://cluster.local/ns/default/sa/api"
	snap := state.Build(1, state.Input{Network: "net-a", Workloads: []*state.Workload{client, local, standIn},
		Services: []state.ServiceDecl{{Node: state.IstiodNode, Name: "api", Namespace: "default", Hostname: "api.default.svc.cluster.local",
			VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.7")}, Ports: []state.ServicePort{{Port: 80, TargetPort: 8080}},
			Workloads: []string{local.UID, standIn.UID}, Traffic: state.Traffic{SubjectAltNames: []string{san}}, Origin: state.OriginIstiod}},
		Gateways: []*state.NetworkGateway{{Network: "net-b", Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.2")}, Port: 15009,
			Identity: "spiffe://cluster.local/ns/istio-system/sa/eastwest", Origin: state.OriginIstiod}}})
	counts := map[string]int{}
	for i := range 4 {
		r := decideOutbound(snap, client, ap("10.1.0.1:40000"), ap("10.96.0.7:80"), func(n int) int { return i % n })
		if r.Kind != RouteHBONE || r.Dest == nil {
			t.Fatalf("pick %d: %s (%s)", i, r.Kind, r.Reason)
		}
		counts[r.Dest.UID]++
		if r.Dest == standIn {
			if r.Outer == nil || r.Outer.Gateway != ap("192.0.2.2:15009") || r.Expected[0].String() != san {
				t.Errorf("the stand-in: %+v (outer %+v), want double HBONE through 192.0.2.2:15009 expecting %s", r, r.Outer, san)
			}
		}
	}
	if counts[standIn.UID] != 3 || counts[local.UID] != 1 {
		t.Errorf("picks %v, want 3 of the stand-in (capacity 3) to 1 local", counts)
	}
}
