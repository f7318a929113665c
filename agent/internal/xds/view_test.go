package xds

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// storeOf applies resources to a new store, failing on any rejection.
func storeOf(t *testing.T, rs ...*discoveryv3.Resource) *store {
	t.Helper()
	s := newStore()
	var addrs, authz []*discoveryv3.Resource
	for _, r := range rs {
		if r.Resource.TypeUrl == AddressType {
			addrs = append(addrs, r)
		} else {
			authz = append(authz, r)
		}
	}
	for typ, list := range map[string][]*discoveryv3.Resource{AddressType: addrs, AuthorizationType: authz} {
		if _, rejected := s.apply(wire(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: typ, Resources: list})); len(rejected) > 0 {
			t.Fatalf("rejected: %v", rejected)
		}
	}
	return s
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func jsonOf(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// Every field of a workload, its service and its waypoint maps to the agent's types.
func TestBuildMapsEveryField(t *testing.T) {
	const (
		vmUID = "Kubernetes/networking.istio.io/WorkloadEntry/ns1/vm-1"
		wpUID = "Kubernetes//Pod/ns1/waypoint-abc"
	)
	s := storeOf(t,
		addrRes(vmUID, "v1", workloadAddr(
			fStr(wlUID, vmUID), fStr(wlName, "vm-1"), fStr(wlNamespace, "ns1"),
			fIP(wlAddresses, "10.0.0.5"), fStr(wlNetwork, "net1"), fUint(wlTunnelProtocol, tunnelHBONE),
			fStr(wlTrustDomain, "example.org"), fStr(wlServiceAccount, "sa1"), fStr(wlNode, "node-a"),
			gatewayHostname(wlWaypoint, "ns1", "waypoint.ns1.svc.cluster.local"),
			fStr(wlCanonicalName, "reviews"), fStr(wlCanonicalRevision, "v2"),
			servicesEntry("ns1/reviews.ns1.svc.cluster.local", portMsg(portListPorts, 80, 8080, 1)),
			fStr(wlAuthorizationPolicies, "ns1/allow-a"),
			fUint(wlStatus, statusUnhealthy), fStr(wlClusterID, "c1"), fMsg(wlCapacity, fUint(wrapperValue, 3)),
		)),
		addrRes(wpUID, "v1", workloadAddr(
			fStr(wlUID, wpUID), fStr(wlName, "waypoint-abc"), fStr(wlNamespace, "ns1"),
			fIP(wlAddresses, "10.244.0.9"), fStr(wlNetwork, "net1"), fUint(wlTunnelProtocol, tunnelHBONE),
			fStr(wlServiceAccount, "waypoint"), fStr(wlNode, "node-b"),
			servicesEntry("ns1/waypoint.ns1.svc.cluster.local", portMsg(portListPorts, 15008, 15008, 0)),
		)),
		addrRes("ns1/reviews.ns1.svc.cluster.local", "v1", serviceAddr(
			fStr(svcName, "reviews"), fStr(svcNamespace, "ns1"), fStr(svcHostname, "reviews.ns1.svc.cluster.local"),
			networkAddr(svcAddresses, "net1", "10.96.0.10"), networkAddr(svcAddresses, "net2", "10.200.0.10"),
			portMsg(svcPorts, 80, 0, 1),
			gatewayIP(svcWaypoint, "net1", "10.96.0.99"),
		)),
		addrRes("ns1/waypoint.ns1.svc.cluster.local", "v1", serviceAddr(
			fStr(svcName, "waypoint"), fStr(svcNamespace, "ns1"), fStr(svcHostname, "waypoint.ns1.svc.cluster.local"),
			networkAddr(svcAddresses, "net1", "10.96.0.99"), portMsg(svcPorts, 15008, 15008, 0),
		)),
		authzRes("ns1/allow-a", "", allowFrom("ns1", "allow-a", "cluster.local/ns/ns2/sa/client")),
	)
	got := build(s, "net1")

	want := Update{
		workloads: []*state.Workload{
			{
				UID: wpUID, Name: "waypoint-abc", Namespace: "ns1", ServiceAccount: "waypoint", TrustDomain: "cluster.local",
				Addresses: addrs("10.244.0.9"), Network: "net1", ClusterID: "Kubernetes", Node: "node-b",
				Tunnel: state.TunnelHBONE, Healthy: true, Capacity: 1, UseWaypoint: "none", Origin: state.OriginIstiod,
			},
			{
				UID: vmUID, Name: "vm-1", Namespace: "ns1", ServiceAccount: "sa1", TrustDomain: "example.org",
				Addresses: addrs("10.0.0.5"), Network: "net1", ClusterID: "c1", Node: "node-a", Tunnel: state.TunnelHBONE,
				Labels: map[string]string{
					"service.istio.io/canonical-name": "reviews", "service.istio.io/canonical-revision": "v2",
					"app": "reviews", "version": "v2",
				},
				Healthy: false, Capacity: 3, UseWaypoint: "ns1/waypoint", AuthorizationPolicies: []string{"ns1/allow-a"}, Origin: state.OriginIstiod,
			},
		},
		Services: []state.ServiceDecl{
			{
				Node: "istiod", Origin: state.OriginIstiod, Name: "reviews", Namespace: "ns1", Hostname: "reviews.ns1.svc.cluster.local",
				VIPs: addrs("10.96.0.10"), Ports: []state.ServicePort{{Port: 80, TargetPort: 0, AppProtocol: "http"}},
				UseWaypoint: "ns1/waypoint",
			},
			{ // the endpoint's own port mapping (a named target port)
				Node: "istiod", Origin: state.OriginIstiod, Name: "reviews", Namespace: "ns1", Hostname: "reviews.ns1.svc.cluster.local",
				VIPs: addrs("10.96.0.10"), Ports: []state.ServicePort{{Port: 80, TargetPort: 8080, AppProtocol: "http"}},
				UseWaypoint: "ns1/waypoint", Workloads: []string{vmUID},
			},
			{
				Node: "istiod", Origin: state.OriginIstiod, Name: "waypoint", Namespace: "ns1", Hostname: "waypoint.ns1.svc.cluster.local",
				VIPs: addrs("10.96.0.99"), Ports: []state.ServicePort{{Port: 15008, TargetPort: 15008}},
				UseWaypoint: "none", Workloads: []string{wpUID},
			},
		},
		Waypoints: []*state.Waypoint{{
			Name: "waypoint", Namespace: "ns1", ServiceAccount: "waypoint", TrustDomain: "cluster.local",
			Addresses: addrs("10.244.0.9"), Node: "node-b", Origin: state.OriginIstiod,
		}},
		Policies: []policy.XDSAuthorization{{
			Name: "allow-a", Namespace: "ns1", Scope: policy.XDSScopeWorkloadSelector, Action: policy.XDSActionAllow,
			Groups: []policy.XDSGroup{{Rules: []policy.XDSRules{{Matches: []policy.XDSMatch{{
				Principals: []policy.XDSStringMatch{{Exact: "cluster.local/ns/ns2/sa/client"}},
			}}}}}},
		}},
		PolicyGeneration: 1,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", jsonOf(got), jsonOf(want))
	}

	// The update resolves in a state snapshot: the workload's waypoint, the service's endpoint and target port.
	snap := state.Build(1, state.Input{Workloads: got.Workloads(), Services: got.Services, Waypoints: got.Waypoints})
	vm, _ := snap.WorkloadByUID(vmUID)
	if wps := snap.WaypointOf(vm); len(wps) != 1 || wps[0].Addresses[0] != netip.MustParseAddr("10.244.0.9") {
		t.Fatalf("waypoint of the workload: %+v", wps)
	}
	svc, ok := snap.ServiceByVIP(netip.MustParseAddr("10.96.0.10"))
	if !ok || len(svc.Endpoints) != 1 || len(snap.ServiceConflicts()) != 0 {
		t.Fatalf("service: %+v, conflicts %v", svc, snap.ServiceConflicts())
	}
	if p, ok := svc.Endpoints[0].TargetPort(80); !ok || p != 8080 {
		t.Fatalf("target port %d %v", p, ok)
	}
}

// Workloads on another network are left out (no gateway support yet); a
// workload with a hostname and no address (a DNS ServiceEntry's host) is kept,
// resolved at connect time; one with neither is left out.
func TestBuildLeavesOutOtherNetworksAndAddresslessWorkloads(t *testing.T) {
	s := storeOf(t,
		addrRes("a", "", workloadAddr(fStr(wlUID, "a"), fStr(wlName, "a"), fStr(wlNamespace, "ns"), fIP(wlAddresses, "10.0.0.1"), fStr(wlNetwork, "net1"))),
		addrRes("b", "", workloadAddr(fStr(wlUID, "b"), fStr(wlName, "b"), fStr(wlNamespace, "ns"), fIP(wlAddresses, "10.0.0.2"), fStr(wlNetwork, "net2"))),
		addrRes("c", "", workloadAddr(fStr(wlUID, "c"), fStr(wlName, "c"), fStr(wlNamespace, "ns"), fIP(wlAddresses, "10.0.0.3"))),
		addrRes("d", "", workloadAddr(fStr(wlUID, "d"), fStr(wlName, "d"), fStr(wlNamespace, "ns"), fStr(wlHostname, "d.example"))),
		addrRes("e", "", workloadAddr(fStr(wlUID, "e"), fStr(wlName, "e"), fStr(wlNamespace, "ns"))),
	)
	var uids []string
	for _, w := range build(s, "net1").Workloads() {
		uids = append(uids, w.UID)
	}
	if !reflect.DeepEqual(uids, []string{"a", "c", "d"}) {
		t.Fatalf("workloads on net1: %v", uids)
	}
	if ws := build(s, "").Workloads(); len(ws) != 4 || ws[3].Hostname != "d.example" {
		t.Fatalf("with no network: %d workloads, want every one with an address or a hostname", len(ws))
	}
}

// Istio's multi-network view (pilot/pkg/serviceregistry/ambient): workloads of another network come with their
// network's gateway, and one "NetworkGateway/<network>/<address>/<port>" workload per gateway carries its
// identity. Those workloads are kept, with or without an address (a per-network stand-in for a service's remote
// endpoints has none, only a capacity); the gateway workload becomes a gateway, never a workload; one without a
// gateway stays out, as does a waypoint instance on another network.
func TestBuildOtherNetworksThroughTheirGateways(t *testing.T) {
	gwUID := "NetworkGateway/net2/10.9.0.1/15009"
	s := storeOf(t,
		addrRes("a", "", workloadAddr(fStr(wlUID, "a"), fStr(wlName, "a"), fStr(wlNamespace, "ns"), fIP(wlAddresses, "10.0.0.1"), fStr(wlNetwork, "net1"))),
		addrRes("b", "", workloadAddr(fStr(wlUID, "b"), fStr(wlName, "b"), fStr(wlNamespace, "ns"), fIP(wlAddresses, "10.0.0.1"),
			fStr(wlNetwork, "net2"), gatewayIP(wlNetworkGateway, "net2", "10.9.0.1"), servicesEntry("ns/svc.ns.svc.cluster.local"))),
		addrRes("c", "", workloadAddr(fStr(wlUID, "c"), fStr(wlName, "c"), fStr(wlNamespace, "ns"), fIP(wlAddresses, "10.0.0.3"), fStr(wlNetwork, "net3"))),
		addrRes("net2/SplitHorizonWorkload/x/ns/svc", "", workloadAddr(fStr(wlUID, "net2/SplitHorizonWorkload/x/ns/svc"),
			fStr(wlName, "net2/SplitHorizonWorkload/x/ns/svc"), fStr(wlNamespace, "ns"), fStr(wlNetwork, "net2"), fMsg(wlCapacity, fUint(1, 7)), gatewayIP(wlNetworkGateway, "net2", "10.9.0.1"))),
		addrRes(gwUID, "", workloadAddr(fStr(wlUID, gwUID), fStr(wlName, gwUID), fStr(wlNamespace, "istio-system"),
			fStr(wlServiceAccount, "eastwest"), fStr(wlNetwork, "net2"), fStr(wlTrustDomain, "example.org"), fIP(wlAddresses, "10.9.0.1"))),
		addrRes("NetworkGateway/net3/gw.example/15008", "", workloadAddr(fStr(wlUID, "NetworkGateway/net3/gw.example/15008"),
			fStr(wlName, "NetworkGateway/net3/gw.example/15008"), fStr(wlNamespace, "istio-system"), fStr(wlNetwork, "net3"), fStr(wlHostname, "gw.example"))),
		addrRes("ns/svc.ns.svc.cluster.local", "", serviceAddr(fStr(svcName, "svc"), fStr(svcNamespace, "ns"), fStr(svcHostname, "svc.ns.svc.cluster.local"),
			networkAddr(svcAddresses, "net2", "10.96.0.2"), portMsg(svcPorts, 80, 8080, 0))),
	)
	u := build(s, "net1")
	var uids []string
	for _, w := range u.Workloads() {
		uids = append(uids, w.UID)
	}
	if !reflect.DeepEqual(uids, []string{"a", "b", "net2/SplitHorizonWorkload/x/ns/svc"}) {
		t.Fatalf("workloads seen from net1: %v", uids)
	}
	if sh := u.Workloads()[2]; sh.Network != "net2" || sh.Capacity != 7 || len(sh.Addresses) != 0 {
		t.Errorf("stand-in workload %+v", *sh)
	}
	want := []*state.NetworkGateway{{Network: "net2", Addresses: addrs("10.9.0.1"),
		Identity: "spiffe://example.org/ns/istio-system/sa/eastwest", Port: 15009, Origin: state.OriginIstiod}}
	if !reflect.DeepEqual(u.Gateways, want) {
		t.Errorf("gateways %s, want %s", jsonOf(u.Gateways), jsonOf(want))
	}
	if len(u.Services) != 1 || len(u.Services[0].VIPs) != 0 {
		t.Errorf("a VIP of net2 must not be one on net1: %s", jsonOf(u.Services))
	}
	// The state keeps both workloads at 10.0.0.1: the address is net1's workload's.
	snap := state.Build(1, state.Input{Workloads: u.Workloads(), Services: u.Services, Gateways: u.Gateways, Network: "net1"})
	if w, _ := snap.WorkloadByAddr(netip.MustParseAddr("10.0.0.1")); w == nil || w.UID != "a" || len(snap.Conflicts()) > 0 {
		t.Errorf("10.0.0.1 on net1 = %v, conflicts %v", w, snap.Conflicts())
	}
	if len(snap.GatewaysOf("net2")) != 1 {
		t.Error("net2's gateway is not in the state")
	}
}

// A ServiceEntry with two hosts is two istio Services of one name: each takes its hostname as its name, so the
// agent's "namespace/name" keys do not collide.
func TestBuildServiceEntryHosts(t *testing.T) {
	s := storeOf(t,
		addrRes("ns/a.example", "", serviceAddr(fStr(svcName, "se"), fStr(svcNamespace, "ns"), fStr(svcHostname, "a.example"))),
		addrRes("ns/b.example", "", serviceAddr(fStr(svcName, "se"), fStr(svcNamespace, "ns"), fStr(svcHostname, "b.example"))),
		addrRes("ns/c.example", "", serviceAddr(fStr(svcName, "other"), fStr(svcNamespace, "ns"), fStr(svcHostname, "c.example"))),
	)
	var names []string
	for _, d := range build(s, "").Services {
		names = append(names, d.Name)
	}
	if !reflect.DeepEqual(names, []string{"a.example", "b.example", "other"}) {
		t.Fatalf("names: %v", names)
	}
}

// A waypoint given by a pod address (no service) is that workload.
func TestBuildWaypointByWorkloadAddress(t *testing.T) {
	s := storeOf(t,
		addrRes("wp", "", workloadAddr(fStr(wlUID, "wp"), fStr(wlName, "wp-pod"), fStr(wlNamespace, "ns"), fIP(wlAddresses, "10.0.0.9"), fStr(wlServiceAccount, "wp-sa"))),
		addrRes("w", "", workloadAddr(fStr(wlUID, "w"), fStr(wlName, "w"), fStr(wlNamespace, "ns"), fIP(wlAddresses, "10.0.0.1"), gatewayIP(wlWaypoint, "", "10.0.0.9"))),
		addrRes("x", "", workloadAddr(fStr(wlUID, "x"), fStr(wlName, "x"), fStr(wlNamespace, "ns"), fIP(wlAddresses, "10.0.0.2"), gatewayHostname(wlWaypoint, "ns", "missing.ns.svc"))),
	)
	u := build(s, "")
	if u.Workloads()[0].UseWaypoint != "ns/wp-pod" || u.Workloads()[2].UseWaypoint != "ns/missing.ns.svc" {
		t.Fatalf("use_waypoint: %q, %q", u.Workloads()[0].UseWaypoint, u.Workloads()[2].UseWaypoint)
	}
	if len(u.Waypoints) != 1 || u.Waypoints[0].Key() != "ns/wp-pod" || u.Waypoints[0].ServiceAccount != "wp-sa" {
		t.Fatalf("waypoints: %s", jsonOf(u.Waypoints))
	}
}
