package xds

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pilot/pkg/features"
	istioxds "istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config/mesh"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambient-agent/ambient-agent/agent/internal/proxy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/xds"
)

// networkGateway is the Gateway by which istiod learns a network's east-west gateway in its own cluster
// (pilot/pkg/serviceregistry/ambient/networks.go, localK8sGatewayToNetworkGateways): class istio-remote,
// labelled with the network, an HBONE listener, and its address in the status. Its identity is
// "<name>-istio-remote" unless the gateway.istio.io/service-account annotation names another.
func networkGateway(name, network, addr, serviceAccount string) *gatewayv1.Gateway {
	gw := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "istio-system", Labels: map[string]string{"topology.istio.io/network": network}},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "istio-remote",
			Listeners: []gatewayv1.Listener{{Name: "cross-network", Port: 15008, Protocol: "HBONE"}}},
		Status: gatewayv1.GatewayStatus{Addresses: []gatewayv1.GatewayStatusAddress{{Type: ptr(gatewayv1.IPAddressType), Value: addr}}},
	}
	if serviceAccount != "" {
		gw.Annotations = map[string]string{"gateway.istio.io/service-account": serviceAccount}
	}
	return gw
}

// Two networks in Istio's own terms: the cluster's pods on kube-net (its system namespace's label), a
// WorkloadEntry on vm-net, one gateway Gateway per network, and a service with endpoints on both. The agent, a
// host on vm-net, must see what a ztunnel there would: the pods on kube-net with their network's gateway, the
// gateways with the identity istiod gives them, no kube-net VIP on vm-net, and a pod address that overlaps the
// host network's workload without a conflict; its routing then balances the service over both networks by
// capacity, the pods through kube-net's gateway.
func TestIstiodTwoNetworks(t *testing.T) {
	overlap := "10.244.0.5" // a pod on kube-net and a WorkloadEntry on vm-net
	vm := workloadEntry("vm-1", overlap, map[string]string{"app": "echo"})
	vm.Spec.Network = "vm-net"
	objs := []runtime.Object{
		labelledNamespace("istio-system", map[string]string{"topology.istio.io/network": "kube-net"}),
		namespace("vms"),
		kubeService("vms", "echo", "10.96.0.20", "echo", nil, nil),
		pod("vms", "echo-1", overlap, "node-a", true, map[string]string{"app": "echo"}),
		pod("vms", "echo-2", "10.244.0.6", "node-a", true, map[string]string{"app": "echo"}),
		vm,
		networkGateway("kube-gw", "kube-net", "172.18.0.10", "istio-eastwestgateway"),
		networkGateway("vm-gw", "vm-net", "192.168.50.2", ""),
	}
	_, cut := istiod(t, objs...)
	c, _ := connectOn(t, cut.addr, "vm-net")
	u := await(t, c, "echo's three endpoints and both gateways", func(u xds.Update) bool {
		return len(endpoints(serviceNamed(u, "vms", "echo"))) > 0 && len(u.Gateways) == 2 &&
			workloadNamed(u, "vms", "echo-1") != nil && workloadNamed(u, "vms", "echo-2") != nil && workloadNamed(u, "vms", "vm-1") != nil
	})
	t.Log(dump(u))

	wantGW := []*state.NetworkGateway{
		{Network: "kube-net", Addresses: []netip.Addr{netip.MustParseAddr("172.18.0.10")}, Port: 15008,
			Identity: "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway", Origin: state.OriginIstiod},
		{Network: "vm-net", Addresses: []netip.Addr{netip.MustParseAddr("192.168.50.2")}, Port: 15008,
			Identity: "spiffe://cluster.local/ns/istio-system/sa/vm-gw-istio-remote", Origin: state.OriginIstiod},
	}
	gws := slices.Clone(u.Gateways)
	slices.SortFunc(gws, func(a, b *state.NetworkGateway) int { return strings.Compare(a.Network, b.Network) })
	if len(gws) != len(wantGW) {
		t.Fatalf("gateways %v", gws)
	}
	for i := range gws {
		if g, w := gws[i], wantGW[i]; g.Network != w.Network || !slices.Equal(g.Addresses, w.Addresses) || g.Port != w.Port ||
			g.Identity != w.Identity || g.Origin != w.Origin {
			t.Errorf("gateway %d: %+v, want %+v", i, *g, *w)
		}
	}
	for _, w := range u.Workloads() {
		if strings.HasPrefix(w.UID, "NetworkGateway/") {
			t.Errorf("istiod's gateway workload %s became a workload", w.UID)
		}
	}
	if w := workloadNamed(u, "vms", "echo-1"); w.Network != "kube-net" || w.Capacity != 1 {
		t.Errorf("echo-1: network %q capacity %d", w.Network, w.Capacity)
	}
	if w := workloadNamed(u, "vms", "vm-1"); w.Network != "vm-net" {
		t.Errorf("vm-1: network %q", w.Network)
	}
	svc := serviceNamed(u, "vms", "echo")
	for _, d := range svc {
		if len(d.VIPs) != 0 {
			t.Errorf("echo's ClusterIP is kube-net's, yet the vm-net view has VIPs %v", d.VIPs)
		}
	}

	// The state of a host on vm-net, with its own workload: the overlapping address is vm-1's, echo keeps
	// three endpoints, and gets a VIP of the agent's range (reached by name).
	host := hostWorkload()
	host.Network = "vm-net"
	snap := state.Build(1, state.Input{Network: "vm-net", Workloads: append([]*state.Workload{host}, u.Workloads()...),
		Services: u.Services, Waypoints: u.Waypoints, Gateways: u.Gateways})
	if w, ok := snap.WorkloadByAddr(netip.MustParseAddr(overlap)); !ok || w.Name != "vm-1" || len(snap.Conflicts()) > 0 {
		t.Fatalf("%s on vm-net: %v (conflicts %v), want vm-1", overlap, w, snap.Conflicts())
	}
	echo, ok := snap.ServiceByHostname("echo.vms.svc.cluster.local")
	if !ok || len(echo.Endpoints) != 3 || len(echo.Addresses) != 1 || !state.IsAllocated(echo.Addresses[0]) {
		t.Fatalf("echo in the state: %+v", echo)
	}
	dst := netip.AddrPortFrom(echo.Addresses[0], 80)
	counts := map[string]int{}
	for range 300 {
		r := proxy.DecideOutboundFrom(snap, host, netip.MustParseAddrPort("10.30.0.1:40000"), dst)
		if r.Kind != proxy.RouteHBONE || r.Dest == nil {
			t.Fatalf("echo: %s (%s)", r.Kind, r.Reason)
		}
		counts[r.Dest.Network]++
		switch r.Dest.Network {
		case "kube-net":
			if r.Outer == nil || r.Outer.Gateway != netip.MustParseAddrPort("172.18.0.10:15008") ||
				r.Outer.Expected[0].String() != wantGW[0].Identity || r.Network != "vm-net" {
				t.Fatalf("a kube-net endpoint: %+v (outer %+v), want double HBONE through kube-net's gateway", r, r.Outer)
			}
		case "vm-net":
			if r.Outer != nil || r.Gateway != netip.MustParseAddrPort(overlap+":15008") {
				t.Fatalf("vm-1: %+v, want direct HBONE to %s", r, overlap)
			}
		}
	}
	// Capacity 1 each: a third of the picks on vm-net, within a wide binomial bound (p=1/3, n=300: sd 8.2).
	if counts["vm-net"] < 60 || counts["vm-net"] > 140 || counts["kube-net"]+counts["vm-net"] != 300 {
		t.Errorf("picks by network %v, want about 100 on vm-net and 200 on kube-net", counts)
	}
}

// Istio's multi-network mode (AMBIENT_ENABLE_MULTI_NETWORK, a service made global by the mesh's
// serviceScopeConfigs): istiod sends a network's endpoints of a global service to the other networks as one
// stand-in workload without an address, whose capacity is their number, behind that network's gateway
// (pilot/pkg/serviceregistry/ambient/multicluster.go, createSplitHorizonWorkload). The agent, a host on
// kube-net here, keeps the stand-in and balances echo by capacity: its two pods against the stand-in of the two
// WorkloadEntries on vm-net, reached through vm-net's gateway.
func TestIstiodMultiNetworkStandIns(t *testing.T) {
	saved := features.EnableAmbientMultiNetwork
	features.EnableAmbientMultiNetwork = true
	t.Cleanup(func() { features.EnableAmbientMultiNetwork = saved })
	vm1, vm2 := workloadEntry("vm-1", "10.10.0.5", map[string]string{"app": "echo"}), workloadEntry("vm-2", "10.10.0.6", map[string]string{"app": "echo"})
	vm1.Spec.Network, vm2.Spec.Network = "vm-net", "vm-net"
	meshCfg := mesh.DefaultMeshConfig()
	meshCfg.ServiceScopeConfigs = []*meshconfig.MeshConfig_ServiceScopeConfigs{{Scope: meshconfig.MeshConfig_ServiceScopeConfigs_GLOBAL,
		ServicesSelector: &meshconfig.LabelSelector{MatchLabels: map[string]string{"istio.io/global": "true"}}}}
	_, cut := istiodWith(t, istioxds.FakeOptions{MeshConfig: meshCfg, KubernetesObjects: []runtime.Object{
		labelledNamespace("istio-system", map[string]string{"topology.istio.io/network": "kube-net"}),
		namespace("vms"),
		kubeService("vms", "echo", "10.96.0.20", "echo", map[string]string{"istio.io/global": "true"}, nil),
		pod("vms", "echo-1", "10.244.0.5", "node-a", true, map[string]string{"app": "echo"}),
		pod("vms", "echo-2", "10.244.0.6", "node-a", true, map[string]string{"app": "echo"}),
		vm1, vm2,
		networkGateway("kube-gw", "kube-net", "172.18.0.10", ""),
		networkGateway("vm-gw", "vm-net", "192.168.50.2", "istio-eastwestgateway"),
	}})
	c, _ := connectOn(t, cut.addr, "kube-net")
	u := await(t, c, "echo's pods and vm-net's stand-in", func(u xds.Update) bool {
		return len(endpoints(serviceNamed(u, "vms", "echo"))) > 0 && workloadNamed(u, "vms", "echo-1") != nil &&
			slices.ContainsFunc(u.Workloads(), func(w *state.Workload) bool { return w.Network == "vm-net" })
	})
	t.Log(dump(u))
	var standIn *state.Workload
	for _, w := range u.Workloads() {
		switch {
		case w.Network != "vm-net":
		case standIn != nil || len(w.Addresses) != 0 || w.Capacity != 2:
			t.Fatalf("vm-net seen from kube-net: %+v, want one stand-in without an address and with capacity 2", *w)
		default:
			standIn = w
		}
	}
	if workloadNamed(u, "vms", "vm-1") != nil {
		t.Error("istiod sent vm-1 itself to another network")
	}
	snap := state.Build(1, state.Input{Network: "kube-net", Workloads: u.Workloads(), Services: u.Services, Waypoints: u.Waypoints,
		Gateways: u.Gateways})
	client := &state.Workload{UID: "client", Name: "client", Namespace: "vms", ServiceAccount: "client", TrustDomain: "cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("10.244.9.9")}, Network: "kube-net", Tunnel: state.TunnelHBONE, Healthy: true,
		Capacity: 1, Local: true, Origin: state.OriginConfig}
	counts := map[string]int{}
	for range 400 {
		r := proxy.DecideOutboundFrom(snap, client, netip.MustParseAddrPort("10.244.9.9:40000"), netip.MustParseAddrPort("10.96.0.20:80"))
		if r.Kind != proxy.RouteHBONE || r.Dest == nil {
			t.Fatalf("echo: %s (%s)", r.Kind, r.Reason)
		}
		counts[r.Dest.Network]++
		if r.Dest == standIn && (r.Outer == nil || r.Outer.Gateway != netip.MustParseAddrPort("192.168.50.2:15008") ||
			r.Outer.Expected[0].String() != "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway") {
			t.Fatalf("the stand-in: %+v (outer %+v), want double HBONE through vm-net's gateway", r, r.Outer)
		}
	}
	// Capacity 2 against 1+1: half the picks on each network (n=400: sd 10).
	if counts["vm-net"] < 150 || counts["vm-net"] > 250 {
		t.Errorf("picks by network %v, want about 200 each", counts)
	}
}
