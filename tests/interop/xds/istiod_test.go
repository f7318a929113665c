package xds

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	istioapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	networkingclient "istio.io/client-go/pkg/apis/networking/v1"
	securityclient "istio.io/client-go/pkg/apis/security/v1"
	"istio.io/istio/pilot/pkg/features"
	"istio.io/istio/pilot/pkg/model"
	istioxds "istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/kube/kclient/clienttest"
	istiolog "istio.io/istio/pkg/log"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/xds"
)

// agentBinary is the ambient-agent built from the root module in TestMain.
var agentBinary string

func TestMain(m *testing.M) {
	// As Istio's own pilot/pkg/xds/workload_test.go: set once, before any server exists.
	features.EnableAmbient = true
	for _, s := range istiolog.Scopes() {
		s.SetOutputLevel(istiolog.WarnLevel)
	}
	dir, err := os.MkdirTemp("", "xds-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBinary = filepath.Join(dir, "ambient-agent")
	// Built in the agent's own module (the repository root), with its go.sum, as `make build` does.
	build := exec.Command("go", "build", "-o", agentBinary, "./agent/cmd/ambient-agent")
	build.Dir = filepath.Join("..", "..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building ambient-agent: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// istiod runs Istio's discovery server with objs on a loopback TCP listener, behind a proxy the test can cut.
func istiod(t *testing.T, objs ...runtime.Object) (*istioxds.FakeDiscoveryServer, *cutter) {
	t.Helper()
	return istiodWith(t, istioxds.FakeOptions{KubernetesObjects: objs})
}

// istiodWith is istiod with more of the server's options.
func istiodWith(t *testing.T, opts istioxds.FakeOptions) (*istioxds.FakeDiscoveryServer, *cutter) {
	t.Helper()
	opts.ListenerBuilder = func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
	s := istioxds.NewFakeDiscoveryServer(t, opts)
	return s, newCutter(t, s.Listener.Addr().String())
}

// connect runs our client against addr until the test ends. Its log goes to the test's, and is kept.
func connect(t *testing.T, addr string) (*xds.Client, *testLog) {
	t.Helper()
	return connectOn(t, addr, "")
}

// connectOn is connect for a host on network (its NETWORK metadata, and the view it builds).
func connectOn(t *testing.T, addr, network string) (*xds.Client, *testLog) {
	t.Helper()
	log := &testLog{t: t}
	c, err := xds.New(xds.Options{Address: addr, Plaintext: true, NodeName: "vm-host", Namespace: "vms", ClusterID: "Kubernetes",
		Network: network, Log: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c, log
}

type testLog struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (l *testLog) Write(b []byte) (int, error) {
	line := strings.TrimSpace(string(b))
	l.t.Log(line)
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
	return len(b), nil
}

// since returns the lines logged after the first n.
func (l *testLog) since(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines[n:])
}

func (l *testLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// await waits until the client's view satisfies ok, and returns it.
func await(t *testing.T, c *xds.Client, what string, ok func(xds.Update) bool) xds.Update {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if u := c.Current(); c.Connected() && ok(u) {
			return u
		}
		select {
		case <-c.Changed():
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s; the view:\n%s", what, dump(c.Current()))
		}
	}
}

func dump(u xds.Update) string {
	var b strings.Builder
	for _, w := range u.Workloads() {
		fmt.Fprintf(&b, "workload %+v\n", *w)
	}
	for _, s := range u.Services {
		fmt.Fprintf(&b, "service %+v\n", s)
	}
	for _, w := range u.Waypoints {
		fmt.Fprintf(&b, "waypoint %+v\n", *w)
	}
	for _, p := range u.Policies {
		fmt.Fprintf(&b, "policy %+v\n", p)
	}
	for _, g := range u.Gateways {
		fmt.Fprintf(&b, "gateway %+v\n", *g)
	}
	return b.String()
}

func workloadNamed(u xds.Update, ns, name string) *state.Workload {
	for _, w := range u.Workloads() {
		if w.Namespace == ns && w.Name == name {
			return w
		}
	}
	return nil
}

func serviceNamed(u xds.Update, ns, name string) []state.ServiceDecl {
	var out []state.ServiceDecl
	for _, s := range u.Services {
		if s.Namespace == ns && s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func policyNamed(u xds.Update, ns, name string) *policy.XDSAuthorization {
	for i, p := range u.Policies {
		if p.Namespace == ns && p.Name == name {
			return &u.Policies[i]
		}
	}
	return nil
}

// endpoints lists the UIDs of a service's declarations with the port mapping they give.
func endpoints(decls []state.ServiceDecl) map[string][]state.ServicePort {
	out := map[string][]state.ServicePort{}
	for _, d := range decls {
		for _, uid := range d.Workloads {
			out[uid] = d.Ports
		}
	}
	return out
}

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func workloadEntry(name, ip string, labels map[string]string) *networkingclient.WorkloadEntry {
	l := map[string]string{"networking.istio.io/tunnel": "http"}
	for k, v := range labels {
		l[k] = v
	}
	return &networkingclient.WorkloadEntry{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "vms", Labels: l},
		Spec:       istioapi.WorkloadEntry{Address: ip, ServiceAccount: "vm-sa", Labels: l},
	}
}

func allowPolicy(principal string) *securityclient.AuthorizationPolicy {
	return &securityclient.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "allow-client", Namespace: "vms"},
		Spec: securityapi.AuthorizationPolicy{
			Selector: &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": "vm-app"}},
			Action:   securityapi.AuthorizationPolicy_ALLOW,
			Rules:    []*securityapi.Rule{{From: []*securityapi.Rule_From{{Source: &securityapi.Source{Principals: []string{principal}}}}}},
		},
	}
}

const (
	vm1UID = "Kubernetes/networking.istio.io/WorkloadEntry/vms/vm-1"
	vm2UID = "Kubernetes/networking.istio.io/WorkloadEntry/vms/vm-2"
)

// A WorkloadEntry, a ServiceEntry selecting it and an AuthorizationPolicy come through as a captured workload,
// a service with its VIP, ports and endpoint, and a bound policy; later changes arrive as updates and removals,
// also across a cut stream (which resumes with initial_resource_versions).
func TestIstiodWorkloadServicePolicy(t *testing.T) {
	se := &networkingclient.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "vm-svc", Namespace: "vms"},
		Spec: istioapi.ServiceEntry{
			Hosts:            []string{"vm-svc.example.com"},
			Addresses:        []string{"240.240.10.1"},
			Ports:            []*istioapi.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP", TargetPort: 8080}},
			Location:         istioapi.ServiceEntry_MESH_INTERNAL,
			Resolution:       istioapi.ServiceEntry_STATIC,
			WorkloadSelector: &istioapi.WorkloadSelector{Labels: map[string]string{"app": "vm-app"}},
		},
	}
	s, cut := istiod(t, namespace("vms"), workloadEntry("vm-1", "10.10.0.5", map[string]string{"app": "vm-app"}), se,
		allowPolicy("cluster.local/ns/default/sa/client"))
	c, log := connect(t, cut.addr)

	u := await(t, c, "the workload, the service and the policy", func(u xds.Update) bool {
		return workloadNamed(u, "vms", "vm-1") != nil && len(serviceNamed(u, "vms", "vm-svc")) > 0 && policyNamed(u, "vms", "allow-client") != nil &&
			len(endpoints(serviceNamed(u, "vms", "vm-svc"))) == 1
	})
	w := workloadNamed(u, "vms", "vm-1")
	if w.UID != vm1UID || w.Tunnel != state.TunnelHBONE || w.ServiceAccount != "vm-sa" || w.TrustDomain != "cluster.local" ||
		!slices.Equal(w.Addresses, []netip.Addr{netip.MustParseAddr("10.10.0.5")}) || !w.Healthy || w.Local ||
		w.UseWaypoint != state.UseWaypointNone || w.ClusterID != "Kubernetes" {
		t.Fatalf("workload %+v", *w)
	}
	if !slices.Contains(w.AuthorizationPolicies, "vms/allow-client") {
		t.Fatalf("workload policies %v, want vms/allow-client", w.AuthorizationPolicies)
	}
	if id, err := w.Identity(); err != nil || id.String() != "spiffe://cluster.local/ns/vms/sa/vm-sa" {
		t.Fatalf("identity %v %v", id, err)
	}
	decls := serviceNamed(u, "vms", "vm-svc")
	d := decls[0]
	if d.Node != xds.IstiodNode || d.Hostname != "vm-svc.example.com" ||
		!slices.Equal(d.VIPs, []netip.Addr{netip.MustParseAddr("240.240.10.1")}) || d.UseWaypoint != state.UseWaypointNone {
		t.Fatalf("service %+v", d)
	}
	if ports := endpoints(decls)[vm1UID]; !slices.Equal(ports, []state.ServicePort{{Port: 80, TargetPort: 8080, AppProtocol: "http"}}) {
		t.Fatalf("endpoint ports %+v (decls %+v)", ports, decls)
	}
	p := policyNamed(u, "vms", "allow-client")
	if p.Action != policy.XDSActionAllow || p.Scope != policy.XDSScopeWorkloadSelector || len(p.Groups) != 1 {
		t.Fatalf("policy %+v", *p)
	}
	if got := principals(p); !slices.Equal(got, []string{"cluster.local/ns/default/sa/client"}) {
		t.Fatalf("policy principals %v (policy %+v)", got, *p)
	}
	// What the policy package makes of it: one enforced ALLOW, no warnings.
	if compiled, warnings := policy.CompileXDS(u.Policies); len(compiled) != len(u.Policies) || len(warnings) != 0 {
		t.Fatalf("CompileXDS: %d of %d, warnings %v", len(compiled), len(u.Policies), warnings)
	}
	// The whole view builds a state snapshot without conflicts, and the service routes to the WorkloadEntry.
	snap := state.Build(1, state.Input{Workloads: u.Workloads(), Services: u.Services, Waypoints: u.Waypoints})
	svc, ok := snap.ServiceByVIP(netip.MustParseAddr("240.240.10.1"))
	if !ok || len(snap.ServiceConflicts()) > 0 || len(snap.Conflicts()) > 0 {
		t.Fatalf("snapshot: service %v, conflicts %v %v", svc, snap.ServiceConflicts(), snap.Conflicts())
	}
	if e, port, ok := state.PickEndpoint(svc, 80, nil, nil); !ok || e.UID != vm1UID || port != 8080 {
		t.Fatalf("endpoint for port 80: %+v %d %v", e, port, ok)
	}

	// Pushed later: a second WorkloadEntry, and a changed policy.
	wes := clienttest.NewWriter[*networkingclient.WorkloadEntry](t, s.KubeClient())
	wes.Create(workloadEntry("vm-2", "10.10.0.6", map[string]string{"app": "vm-app"}))
	clienttest.NewWriter[*securityclient.AuthorizationPolicy](t, s.KubeClient()).Update(allowPolicy("cluster.local/ns/default/sa/other"))
	await(t, c, "vm-2 as a second endpoint and the changed policy", func(u xds.Update) bool {
		eps := endpoints(serviceNamed(u, "vms", "vm-svc"))
		p := policyNamed(u, "vms", "allow-client")
		return workloadNamed(u, "vms", "vm-2") != nil && len(eps) == 2 && eps[vm2UID] != nil &&
			p != nil && slices.Equal(principals(p), []string{"cluster.local/ns/default/sa/other"})
	})

	// Removed while the stream is cut: the resumed stream (initial_resource_versions) brings the removal.
	before, logged := cut.accepted(), log.count()
	cut.cut()
	wes.Delete("vm-2", "vms")
	gone := time.Now().Add(30 * time.Second)
	for slices.ContainsFunc(s.AmbientIndex.All(), func(a model.AddressInfo) bool { return a.ResourceName() == vm2UID }) {
		if time.Now().After(gone) {
			t.Fatal("istiod's index still holds vm-2")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cut.restore()
	u = await(t, c, "vm-2 removed after the reconnection", func(u xds.Update) bool {
		return cut.accepted() > before && workloadNamed(u, "vms", "vm-2") == nil && len(endpoints(serviceNamed(u, "vms", "vm-svc"))) == 1
	})
	if workloadNamed(u, "vms", "vm-1") == nil || policyNamed(u, "vms", "allow-client") == nil {
		t.Fatalf("the resumed view lost what did not change:\n%s", dump(u))
	}
	// istiod honoured initial_resource_versions: its first answer on the new stream re-sent nothing unchanged
	// (vm-1, the service) and removed vm-2.
	first := ""
	for _, l := range log.since(logged) {
		if strings.Contains(l, `msg="xds: response" type=`+xds.AddressType) {
			first = l
			break
		}
	}
	if !strings.Contains(first, " resources=0 removed=1 rejected=0 ") {
		t.Fatalf("first address response after resuming: %q, want no resource and one removal", first)
	}
}

func principals(p *policy.XDSAuthorization) []string {
	var out []string
	for _, g := range p.Groups {
		for _, r := range g.Rules {
			for _, m := range r.Matches {
				for _, s := range m.Principals {
					out = append(out, s.Exact+s.Prefix+s.Suffix)
				}
			}
		}
	}
	return out
}

// A workload that uses a waypoint names it "namespace/name", and the waypoint's pod comes as a state.Waypoint of
// that name, so that the agent's state resolves the reference.
func TestIstiodWaypoint(t *testing.T) {
	// istiod names a waypoint by the hostname in its Gateway's status, else by the address there.
	t.Run("hostname", func(t *testing.T) {
		testWaypoint(t, gatewayv1.GatewayStatusAddress{Type: ptr(gatewayv1.HostnameAddressType), Value: "waypoint.vms.svc.cluster.local"})
	})
	t.Run("address", func(t *testing.T) {
		testWaypoint(t, gatewayv1.GatewayStatusAddress{Type: ptr(gatewayv1.IPAddressType), Value: "10.96.0.99"})
	})
}

func testWaypoint(t *testing.T, status gatewayv1.GatewayStatusAddress) {
	class := &gatewayv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-waypoint"},
		Spec:       gatewayv1.GatewayClassSpec{ControllerName: "istio.io/mesh-controller"},
	}
	gw := &gatewayv1.Gateway{
		// "all": a waypoint for workloads as well as services (Istio's default is services only).
		ObjectMeta: metav1.ObjectMeta{Name: "waypoint", Namespace: "vms", Labels: map[string]string{"istio.io/waypoint-for": "all"}},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: "istio-waypoint",
			Listeners:        []gatewayv1.Listener{{Name: "mesh", Port: 15008, Protocol: "HBONE"}},
		},
		Status: gatewayv1.GatewayStatus{Addresses: []gatewayv1.GatewayStatusAddress{status}},
	}
	wpSvc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "waypoint", Namespace: "vms"},
		Spec: corev1.ServiceSpec{
			ClusterIP: "10.96.0.99",
			Ports:     []corev1.ServicePort{{Name: "mesh", Port: 15008, Protocol: "TCP", TargetPort: intstr.FromInt32(15008)}},
			Selector:  map[string]string{"gateway.networking.k8s.io/gateway-name": "waypoint"},
		},
	}
	wpPod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "waypoint-abc", Namespace: "vms",
			Labels: map[string]string{"gateway.networking.k8s.io/gateway-name": "waypoint"}},
		Spec: corev1.PodSpec{ServiceAccountName: "waypoint", NodeName: "node-1"},
		Status: corev1.PodStatus{PodIP: "10.244.0.9", PodIPs: []corev1.PodIP{{IP: "10.244.0.9"}}, Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	we := workloadEntry("vm-1", "10.10.0.5", map[string]string{"istio.io/use-waypoint": "waypoint", "app": "vm-app"})
	se := &networkingclient.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "vm-svc", Namespace: "vms", Labels: map[string]string{"istio.io/use-waypoint": "waypoint"}},
		Spec: istioapi.ServiceEntry{
			Hosts:            []string{"vm-svc.example.com"},
			Addresses:        []string{"240.240.10.1"},
			Ports:            []*istioapi.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP", TargetPort: 8080}},
			Location:         istioapi.ServiceEntry_MESH_INTERNAL,
			Resolution:       istioapi.ServiceEntry_STATIC,
			WorkloadSelector: &istioapi.WorkloadSelector{Labels: map[string]string{"app": "vm-app"}},
		},
	}
	_, cut := istiod(t, namespace("vms"), class, gw, wpSvc, wpPod, we, se)
	c, _ := connect(t, cut.addr)

	u := await(t, c, "the workload and service with their waypoint, and the waypoint's instance", func(u xds.Update) bool {
		w, svc := workloadNamed(u, "vms", "vm-1"), serviceNamed(u, "vms", "vm-svc")
		return w != nil && w.UseWaypoint == "vms/waypoint" && len(svc) > 0 && svc[0].UseWaypoint == "vms/waypoint" &&
			len(u.Waypoints) == 1
	})
	wp := u.Waypoints[0]
	if wp.Key() != "vms/waypoint" || wp.ServiceAccount != "waypoint" || wp.TrustDomain != "cluster.local" ||
		!slices.Equal(wp.Addresses, []netip.Addr{netip.MustParseAddr("10.244.0.9")}) || wp.Node != "node-1" {
		t.Fatalf("waypoint %+v", *wp)
	}
	snap := state.Build(1, state.Input{Workloads: u.Workloads(), Services: u.Services, Waypoints: u.Waypoints})
	w, _ := snap.WorkloadByUID(vm1UID)
	if wps := snap.WaypointOf(w); len(wps) != 1 || wps[0] != wp {
		t.Fatalf("the state does not resolve the workload's waypoint: %v\n%s", wps, dump(u))
	}
	svc, _ := snap.ServiceByVIP(netip.MustParseAddr("240.240.10.1"))
	if wps := snap.ServiceWaypoint(svc); len(wps) != 1 || wps[0] != wp {
		t.Fatalf("the state does not resolve the service's waypoint: %v\n%s", wps, dump(u))
	}
}

func ptr[T any](v T) *T { return &v }

// What `ambient-agent export kubernetes` prints, applied to the cluster, comes back from istiod as the host's
// workload (HBONE, its service account and address) and its service (VIP and ports), with the workload as endpoint.
func TestIstiodExportedObjects(t *testing.T) {
	out, err := exec.Command(agentBinary, "export", "kubernetes", "-config", "testdata/host.toml").Output()
	if err != nil {
		t.Fatalf("export kubernetes: %v", err)
	}
	objs := []runtime.Object{namespace("shop")}
	for _, doc := range strings.Split(string(out), "---\n")[1:] {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("document %q: %v", doc, err)
		}
		var obj runtime.Object
		switch meta.Kind {
		case "WorkloadEntry":
			obj = &networkingclient.WorkloadEntry{}
		case "ServiceEntry":
			obj = &networkingclient.ServiceEntry{}
		default:
			t.Fatalf("export printed a %q", meta.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s does not decode as Istio's type: %v\n%s", meta.Kind, err, doc)
		}
		objs = append(objs, obj)
	}
	if len(objs) != 3 {
		t.Fatalf("export printed %d objects, want a WorkloadEntry and a ServiceEntry:\n%s", len(objs)-1, out)
	}
	_, cut := istiod(t, objs...)
	c, _ := connect(t, cut.addr)

	const uid = "Kubernetes/networking.istio.io/WorkloadEntry/shop/web"
	u := await(t, c, "the exported workload and service", func(u xds.Update) bool {
		return workloadNamed(u, "shop", "web") != nil && len(endpoints(serviceNamed(u, "shop", "web"))) == 1
	})
	w := workloadNamed(u, "shop", "web")
	if w.UID != uid || w.Tunnel != state.TunnelHBONE || w.ServiceAccount != "web-sa" || w.Network != "vm-net" ||
		!slices.Equal(w.Addresses, []netip.Addr{netip.MustParseAddr("10.20.0.7")}) ||
		w.Labels["app"] != "web" || w.Labels["version"] != "v3" {
		t.Fatalf("workload %+v", *w)
	}
	decls := serviceNamed(u, "shop", "web")
	if d := decls[0]; d.Hostname != "web.shop.svc.cluster.local" || !slices.Equal(d.VIPs, []netip.Addr{netip.MustParseAddr("240.240.20.1")}) {
		t.Fatalf("service %+v", d)
	}
	want := []state.ServicePort{{Port: 80, TargetPort: 8080, AppProtocol: "http"}, {Port: 5432, TargetPort: 5432, AppProtocol: "tcp"}}
	if got := endpoints(decls)[uid]; !slices.Equal(got, want) {
		t.Fatalf("endpoint ports %+v, want %+v", got, want)
	}
}

// cutter is a TCP proxy in front of istiod whose connections the test can cut, to break the client's stream.
type cutter struct {
	addr, target string
	ln           net.Listener

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
	count int
	wg    sync.WaitGroup
}

func newCutter(t *testing.T, target string) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]bool{}}
	c.wg.Add(1)
	go c.serve()
	t.Cleanup(func() {
		ln.Close()
		c.cut()
		c.wg.Wait()
	})
	return c
}

func (c *cutter) serve() {
	defer c.wg.Done()
	for {
		in, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		if c.down {
			c.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", c.target)
		if err != nil {
			c.mu.Unlock()
			in.Close()
			continue
		}
		c.count++
		c.conns[in], c.conns[out] = true, true
		c.wg.Add(2)
		c.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer c.wg.Done()
			io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(out, in)
		go pipe(in, out)
	}
}

// cut closes every proxied connection and refuses new ones until restore.
func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = true
	for conn := range c.conns {
		conn.Close()
	}
	clear(c.conns)
}

func (c *cutter) restore() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = false
}

func (c *cutter) accepted() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}
