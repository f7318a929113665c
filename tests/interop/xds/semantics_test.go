package xds

import (
	"math"
	"net/netip"
	"slices"
	"testing"

	istioapi "istio.io/api/networking/v1alpha3"
	networkingclient "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambient-agent/ambient-agent/agent/internal/proxy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/xds"
)

// The host's own workload, as the agent's configuration declares it: node
// "vm-host", locality r1/z1, namespace "vms". The cases below route from it.
func hostWorkload() *state.Workload {
	return &state.Workload{UID: "vm-host/vms/host-app", Name: "host-app", Namespace: "vms", ServiceAccount: "host-app",
		TrustDomain: "cluster.local", Addresses: []netip.Addr{netip.MustParseAddr("10.30.0.1")}, Node: "vm-host",
		ClusterID: "Kubernetes", Locality: state.Locality{Region: "r1", Zone: "z1"}, Tunnel: state.TunnelHBONE,
		Healthy: true, Capacity: 1, Local: true, Origin: state.OriginConfig}
}

// kubeNode is a Kubernetes node in region r1 and the given zone.
func kubeNode(name, zone string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"topology.kubernetes.io/region": "r1", "topology.kubernetes.io/zone": zone}}}
}

// pod is a captured (ambient) pod on node, ready or not.
func pod(ns, name, ip, node string, ready bool, labels map[string]string) *corev1.Pod {
	l := map[string]string{"app": name}
	for k, v := range labels {
		l[k] = v
	}
	status := corev1.ConditionTrue
	if !ready {
		status = corev1.ConditionFalse
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: l,
			Annotations: map[string]string{"ambient.istio.io/redirection": "enabled"}},
		Spec: corev1.PodSpec{ServiceAccountName: name, NodeName: node},
		Status: corev1.PodStatus{PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}},
	}
}

// kubeService selects pods by app=selector on port 80 -> 8080.
func kubeService(ns, name, vip, selector string, labels map[string]string, mutate func(*corev1.ServiceSpec)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.ServiceSpec{ClusterIP: vip, Selector: map[string]string{"app": selector},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: "TCP", TargetPort: intstr.FromInt32(8080)}}},
	}
	if mutate != nil {
		mutate(&s.Spec)
	}
	return s
}

// waypointObjects is a waypoint Gateway for traffic type `for` ("" is Istio's
// default, service), its Service at vip and its pod at ip.
func waypointObjects(ns, name, vip, ip, forType string) []runtime.Object {
	labels := map[string]string{}
	if forType != "" {
		labels["istio.io/waypoint-for"] = forType
	}
	host := name + "." + ns + ".svc.cluster.local"
	return []runtime.Object{
		&gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: "istio-waypoint",
				Listeners: []gatewayv1.Listener{{Name: "mesh", Port: 15008, Protocol: "HBONE"}}},
			Status: gatewayv1.GatewayStatus{Addresses: []gatewayv1.GatewayStatusAddress{{Type: ptr(gatewayv1.HostnameAddressType), Value: host}}},
		},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{ClusterIP: vip, Selector: map[string]string{"gateway.networking.k8s.io/gateway-name": name},
				Ports: []corev1.ServicePort{{Name: "mesh", Port: 15008, Protocol: "TCP", TargetPort: intstr.FromInt32(15008)}}},
		},
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-0", Namespace: ns, Labels: map[string]string{"gateway.networking.k8s.io/gateway-name": name}},
			Spec:       corev1.PodSpec{ServiceAccountName: name, NodeName: "node-a"},
			Status: corev1.PodStatus{PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, Phase: corev1.PodRunning,
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
		},
	}
}

func labelledNamespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

// Every case of spec/routing.md that istiod decides, read from istiod's own
// discovery server and routed by the agent's own outbound decision, from the
// host's workload.
func TestIstiodAmbientSemantics(t *testing.T) {
	class := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "istio-waypoint"},
		Spec: gatewayv1.GatewayClassSpec{ControllerName: "istio.io/mesh-controller"}}
	objs := []runtime.Object{class, namespace("vms"), kubeNode("vm-host", "z1"), kubeNode("node-a", "z1"), kubeNode("node-b", "z2"),
		// A service-only waypoint in a namespace nothing binds to it.
		labelledNamespace("unbound", nil),
		kubeService("unbound", "app", "10.96.1.1", "app", nil, nil), pod("unbound", "app", "10.244.1.1", "node-a", true, nil),
		// A namespace bound to its service waypoint.
		labelledNamespace("bound", map[string]string{"istio.io/use-waypoint": "wp"}),
		kubeService("bound", "app", "10.96.2.1", "app", nil, nil), pod("bound", "app", "10.244.2.1", "node-a", true, nil),
		// A workload waypoint bound by a pod's own label.
		labelledNamespace("wl", nil),
		kubeService("wl", "app", "10.96.3.1", "app", nil, nil),
		pod("wl", "app", "10.244.3.1", "node-a", true, map[string]string{"istio.io/use-waypoint": "wpw"}),
		// A canary: 25% of the service's connections to the next waypoint.
		labelledNamespace("canary", nil),
		func() runtime.Object {
			s := kubeService("canary", "app", "10.96.4.1", "app", map[string]string{"istio.io/use-waypoint": "stable",
				"istio.io/use-waypoint-canary": "next"}, nil)
			s.Annotations = map[string]string{"istio.io/use-waypoint-canary-weight": "25"}
			return s
		}(),
		pod("canary", "app", "10.244.4.1", "node-a", true, nil),
		// publishNotReadyAddresses, internalTrafficPolicy: Local, trafficDistribution: PreferClose.
		labelledNamespace("lb", nil),
		kubeService("lb", "notready", "10.96.5.1", "notready", nil, func(s *corev1.ServiceSpec) { s.PublishNotReadyAddresses = true }),
		pod("lb", "notready", "10.244.5.1", "node-a", false, nil),
		kubeService("lb", "local", "10.96.5.2", "local", nil, func(s *corev1.ServiceSpec) {
			s.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
		}),
		pod("lb", "local-here", "10.244.5.2", "vm-host", true, map[string]string{"app": "local"}),
		pod("lb", "local-there", "10.244.5.3", "node-b", true, map[string]string{"app": "local"}),
		kubeService("lb", "close", "10.96.5.3", "close", nil, func(s *corev1.ServiceSpec) { s.TrafficDistribution = ptr("PreferClose") }),
		pod("lb", "close-z1", "10.244.5.4", "node-a", true, map[string]string{"app": "close"}),
		pod("lb", "close-z2", "10.244.5.5", "node-b", true, map[string]string{"app": "close"}),
		// ServiceEntries: DNS with no endpoints, resolution NONE, and subjectAltNames.
		&networkingclient.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Name: "dns", Namespace: "vms"},
			Spec: istioapi.ServiceEntry{Hosts: []string{"api.external.test"}, Addresses: []string{"240.240.30.1"},
				Ports:    []*istioapi.ServicePort{{Number: 8080, Name: "http", Protocol: "HTTP"}},
				Location: istioapi.ServiceEntry_MESH_EXTERNAL, Resolution: istioapi.ServiceEntry_DNS}},
		&networkingclient.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Name: "none", Namespace: "vms"},
			Spec: istioapi.ServiceEntry{Hosts: []string{"passthrough.external.test"}, Addresses: []string{"240.240.30.2"},
				Ports:    []*istioapi.ServicePort{{Number: 443, Name: "tls", Protocol: "TLS"}},
				Location: istioapi.ServiceEntry_MESH_EXTERNAL, Resolution: istioapi.ServiceEntry_NONE}},
		&networkingclient.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Name: "sans", Namespace: "vms"},
			Spec: istioapi.ServiceEntry{Hosts: []string{"sans.vms.test"}, Addresses: []string{"240.240.30.3"},
				Ports:    []*istioapi.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP", TargetPort: 8080}},
				Location: istioapi.ServiceEntry_MESH_INTERNAL, Resolution: istioapi.ServiceEntry_STATIC,
				SubjectAltNames:  []string{"spiffe://cluster.local/ns/vms/sa/sans-frontend"},
				WorkloadSelector: &istioapi.WorkloadSelector{Labels: map[string]string{"app": "sans"}}}},
		workloadEntry("sans-1", "10.10.0.9", map[string]string{"app": "sans"}),
	}
	for _, o := range [][]runtime.Object{
		waypointObjects("unbound", "wp", "10.96.1.99", "10.244.1.99", ""),
		waypointObjects("bound", "wp", "10.96.2.99", "10.244.2.99", ""),
		waypointObjects("wl", "wpw", "10.96.3.99", "10.244.3.99", "workload"),
		waypointObjects("canary", "stable", "10.96.4.98", "10.244.4.98", ""),
		waypointObjects("canary", "next", "10.96.4.99", "10.244.4.99", ""),
	} {
		objs = append(objs, o...)
	}
	_, cut := istiod(t, objs...)
	c, _ := connect(t, cut.addr)
	u := await(t, c, "every case's objects", func(u xds.Update) bool {
		for _, name := range [][2]string{{"unbound", "app"}, {"bound", "app"}, {"wl", "app"}, {"canary", "app"}, {"lb", "notready"},
			{"lb", "local"}, {"lb", "close"}, {"vms", "dns"}, {"vms", "none"}, {"vms", "sans"}} {
			if len(serviceNamed(u, name[0], name[1])) == 0 {
				return false
			}
		}
		canary := serviceNamed(u, "canary", "app")[0]
		return len(canary.Traffic.WeightedWaypoints) == 2 && workloadNamed(u, "wl", "app") != nil &&
			workloadNamed(u, "wl", "app").UseWaypoint != state.UseWaypointNone && len(endpoints(serviceNamed(u, "lb", "local"))) == 2 &&
			len(endpoints(serviceNamed(u, "lb", "close"))) == 2 && len(endpoints(serviceNamed(u, "vms", "dns"))) == 1
	})
	host := hostWorkload()
	snap := state.Build(1, state.Input{Workloads: append(slices.Clone(u.Workloads()), host), Services: u.Services, Waypoints: u.Waypoints})
	from := netip.AddrPortFrom(host.Addresses[0], 40000)
	route := func(dst string) proxy.Route {
		return proxy.DecideOutboundFrom(snap, host, from, netip.MustParseAddrPort(dst))
	}
	viaWaypoint := func(t *testing.T, r proxy.Route, key, target string) {
		t.Helper()
		if r.Kind != proxy.RouteHBONE || r.Waypoint == nil || r.Waypoint.Key() != key || r.Target != netip.MustParseAddrPort(target) {
			t.Fatalf("route %+v, want HBONE through waypoint %s with :authority %s", r, key, target)
		}
	}
	direct := func(t *testing.T, r proxy.Route, target string) {
		t.Helper()
		if r.Kind != proxy.RouteHBONE || r.Waypoint != nil || r.Target != netip.MustParseAddrPort(target) ||
			r.Gateway != netip.AddrPortFrom(r.Target.Addr(), proxy.HBONEPort) {
			t.Fatalf("route %+v, want HBONE straight to %s", r, target)
		}
	}

	t.Run("a service-only waypoint no one binds is not used", func(t *testing.T) {
		if d := serviceNamed(u, "unbound", "app")[0]; d.UseWaypoint != state.UseWaypointNone {
			t.Fatalf("service names %q", d.UseWaypoint)
		}
		direct(t, route("10.96.1.1:80"), "10.244.1.1:8080")
		direct(t, route("10.244.1.1:8080"), "10.244.1.1:8080")
	})
	t.Run("a namespace bound to a service waypoint: service traffic only", func(t *testing.T) {
		viaWaypoint(t, route("10.96.2.1:80"), "bound/wp", "10.96.2.1:80")
		// The waypoint is for services: a workload address goes straight to the pod.
		direct(t, route("10.244.2.1:8080"), "10.244.2.1:8080")
	})
	t.Run("a workload bound to a workload waypoint: workload traffic only", func(t *testing.T) {
		viaWaypoint(t, route("10.244.3.1:8080"), "wl/wpw", "10.244.3.1:8080")
		// Service traffic never takes an endpoint's workload waypoint.
		direct(t, route("10.96.3.1:80"), "10.244.3.1:8080")
	})
	t.Run("a weighted waypoint canary splits within binomial bounds", func(t *testing.T) {
		ww := serviceNamed(u, "canary", "app")[0].Traffic.WeightedWaypoints
		if ww[0] != (state.WeightedWaypoint{Waypoint: "canary/stable", Weight: 75}) || ww[1] != (state.WeightedWaypoint{Waypoint: "canary/next", Weight: 25}) {
			t.Fatalf("weighted waypoints %+v", ww)
		}
		const n = 400
		next := 0
		for range n {
			r := route("10.96.4.1:80")
			if r.Waypoint == nil {
				t.Fatalf("route %+v, want a waypoint", r)
			}
			if r.Waypoint.Name == "next" {
				next++
			}
		}
		// 25% of 400 is 100, with a standard deviation of 8.7: 4.5 of them either side.
		mean, sd := n*0.25, math.Sqrt(n*0.25*0.75)
		if float64(next) < mean-4.5*sd || float64(next) > mean+4.5*sd {
			t.Fatalf("%d of %d connections to the canary, want about %v", next, n, mean)
		}
	})
	t.Run("publishNotReadyAddresses reaches a pod that is not ready", func(t *testing.T) {
		d := serviceNamed(u, "lb", "notready")[0]
		if d.Traffic.LoadBalancing == nil || !d.Traffic.LoadBalancing.AllowAll {
			t.Fatalf("load balancing %+v, want ALLOW_ALL", d.Traffic.LoadBalancing)
		}
		direct(t, route("10.96.5.1:80"), "10.244.5.1:8080")
	})
	t.Run("internalTrafficPolicy Local keeps to this node", func(t *testing.T) {
		for range 50 {
			direct(t, route("10.96.5.2:80"), "10.244.5.2:8080")
		}
	})
	t.Run("trafficDistribution PreferClose keeps to this zone", func(t *testing.T) {
		if w := workloadNamed(u, "lb", "close-z2"); w == nil || w.Locality != (state.Locality{Region: "r1", Zone: "z2"}) {
			t.Fatalf("the pod's locality: %+v", w)
		}
		for range 50 {
			direct(t, route("10.96.5.3:80"), "10.244.5.4:8080")
		}
	})
	t.Run("a DNS ServiceEntry's host is resolved at connect time", func(t *testing.T) {
		r := route("240.240.30.1:8080")
		if r.Kind != proxy.RoutePlain || r.Hostname != "api.external.test" || r.Target.Port() != 8080 {
			t.Fatalf("route %+v, want plaintext to api.external.test:8080", r)
		}
	})
	t.Run("resolution NONE passes through", func(t *testing.T) {
		if r := route("240.240.30.2:443"); r.Kind != proxy.RoutePassthrough || r.Target != netip.MustParseAddrPort("240.240.30.2:443") || r.Service == nil {
			t.Fatalf("route %+v, want passthrough to the address dialled", r)
		}
	})
	t.Run("subjectAltNames are identities the endpoint may present", func(t *testing.T) {
		r := route("240.240.30.3:80")
		ids := []string{}
		for _, id := range r.Expected {
			ids = append(ids, id.String())
		}
		if r.Kind != proxy.RouteHBONE || !slices.Equal(ids, []string{"spiffe://cluster.local/ns/vms/sa/vm-sa", "spiffe://cluster.local/ns/vms/sa/sans-frontend"}) {
			t.Fatalf("route %+v, expected identities %v", r, ids)
		}
	})
}
