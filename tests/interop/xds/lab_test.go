package xds

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	istioapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	networkingclient "istio.io/client-go/pkg/apis/networking/v1"
	securityclient "istio.io/client-go/pkg/apis/security/v1"
	istioxds "istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/kube/kclient/clienttest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// The real agent joins istiod: istiod's discovery server runs in this test's
// process, listening inside lab host h1 (with a DNS server for names outside
// the mesh); h2 runs the agent with [istio] discovery (cluster_id
// "Kubernetes", Istio's default) and a workload istiod knows as a
// WorkloadEntry bound to a waypoint; h3 is a sidecar-style HBONE caller, h4 one
// with an ingress gateway's identity. Both reach h2's waypoint-bound workload
// directly, as Istio lets them (policy decides, as a ztunnel's), until a
// policy created in the cluster denies h3 at h2; h4 still passes. h2 reaches a
// DNS ServiceEntry's host by name: its DNS proxy answers the entry's VIP, and
// the agent resolves the host with the host's own resolvers when it connects;
// and a ServiceEntry whose endpoint presents the identity its subjectAltNames
// name, not its WorkloadEntry's.
func TestAgentEnforcesIstiodPolicy(t *testing.T) {
	lab.Require(t, "nginx", "curl")
	l := lab.New(t, 4)
	istiodHost, web, sleep, ingress := l.Hosts[0], l.Hosts[1], l.Hosts[2], l.Hosts[3]
	webLabels := map[string]string{"networking.istio.io/tunnel": "http", "app": "web", "istio.io/use-waypoint": "waypoint"}
	webEntry := &networkingclient.WorkloadEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "vms", Labels: webLabels},
		Spec:       istioapi.WorkloadEntry{Address: web.Addr.String(), ServiceAccount: "web", Labels: webLabels},
	}
	db := workloadEntry("db", "10.77.0.99", map[string]string{"app": "db"})
	dbService := &networkingclient.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "vms"},
		Spec: istioapi.ServiceEntry{
			Hosts: []string{"db.vms.example.com"}, Addresses: []string{"240.240.20.1"},
			Ports:            []*istioapi.ServicePort{{Number: 5432, Name: "tcp", Protocol: "TCP"}},
			Location:         istioapi.ServiceEntry_MESH_INTERNAL,
			Resolution:       istioapi.ServiceEntry_STATIC,
			WorkloadSelector: &istioapi.WorkloadSelector{Labels: map[string]string{"app": "db"}},
		},
	}
	apiService := &networkingclient.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "vms"},
		Spec: istioapi.ServiceEntry{Hosts: []string{"api.external.test"}, Addresses: []string{"240.240.30.1"},
			Ports:    []*istioapi.ServicePort{{Number: 8080, Name: "http", Protocol: "HTTP"}},
			Location: istioapi.ServiceEntry_MESH_EXTERNAL, Resolution: istioapi.ServiceEntry_DNS},
	}
	// A ServiceEntry whose endpoint (the ingress host, as a WorkloadEntry of another service account) presents
	// the identity its subjectAltNames name: the handshake must accept it.
	sanEntry := workloadEntry("san-ep", ingress.Addr.String(), map[string]string{"app": "san"})
	sanService := &networkingclient.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "san", Namespace: "vms"},
		Spec: istioapi.ServiceEntry{Hosts: []string{"san.vms.example.com"}, Addresses: []string{"240.240.30.2"},
			Ports:    []*istioapi.ServicePort{{Number: 8080, Name: "http", Protocol: "HTTP"}},
			Location: istioapi.ServiceEntry_MESH_INTERNAL, Resolution: istioapi.ServiceEntry_STATIC,
			SubjectAltNames:  []string{"spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"},
			WorkloadSelector: &istioapi.WorkloadSelector{Labels: map[string]string{"app": "san"}}},
	}
	class := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "istio-waypoint"},
		Spec: gatewayv1.GatewayClassSpec{ControllerName: "istio.io/mesh-controller"}}
	objs := append([]runtime.Object{namespace("vms"), class, webEntry, db, dbService, apiService, sanEntry, sanService},
		waypointObjects("vms", "waypoint", "10.96.0.98", "10.77.0.98", "workload")...)
	s := istioxds.NewFakeDiscoveryServer(t, istioxds.FakeOptions{
		KubernetesObjects: objs,
		ListenerBuilder:   func() (net.Listener, error) { return istiodHost.Listen("tcp", istiodHost.Addr.String()+":15010") },
	})
	// The host's own DNS: api.external.test is the ingress host, where "the API" runs.
	serveDNS(t, istiodHost, map[string]netip.Addr{"api.external.test.": ingress.Addr})

	web.StartNginx("hello from web", 8080)
	ingress.StartNginx("hello from api", 8080)
	web.Issue(agentBinary, "vms", "web")
	sleep.Issue(agentBinary, "vms", "sleep")
	ingress.Issue(agentBinary, "istio-system", "istio-ingressgateway")
	web.DefaultRoute() // the ServiceEntry's VIP needs a route before capture redirects it
	web.SetResolvConf(fmt.Sprintf("nameserver %s\n", istiodHost.Addr))
	webAgent := web.StartAgent(agentBinary, fmt.Sprintf(`[node]
name = "web-host"
cluster_id = "Kubernetes"
drain_timeout = "2s"
[identity]
dir = %q
[istio]
enabled = true
address = "%s:15010"
insecure_plaintext = true
[dns]
capture = true
upstreams = ["%s:53"]
[[workload]]
name = "web"
namespace = "vms"
service_account = "web"
addresses = [%q]
labels = { app = "web" }
`, web.IdentityDir(), istiodHost.Addr, istiodHost.Addr, web.Addr))
	caller := func(h *lab.Host, ns, sa string) *lab.Agent {
		return h.StartAgent(agentBinary, fmt.Sprintf(`[node]
name = "%s-host"
drain_timeout = "2s"
[identity]
dir = %q
[[workload]]
name = %q
namespace = %q
service_account = %q
addresses = [%q]
[[remote_workload]]
name = "web"
namespace = "vms"
service_account = "web"
addresses = [%q]
`, sa, h.IdentityDir(), sa, ns, sa, h.Addr, web.Addr))
	}
	sleepAgent, ingressAgent := caller(sleep, "vms", "sleep"), caller(ingress, "istio-system", "istio-ingressgateway")
	webAgent.WaitReady(t, 30*time.Second) // ready includes the first answer from istiod
	sleepAgent.WaitReady(t, 20*time.Second)
	ingressAgent.WaitReady(t, 20*time.Second)

	dump := waitDump(t, webAgent, "the cluster's workload and services, and the local workload's waypoint", func(d agentDump) bool {
		return d.hasWorkload("db") && d.hasService("db.vms.example.com") && d.hasService("api.external.test") && d.waypointOf("web") == "vms/waypoint"
	})
	if !dump.hasWorkload("web") {
		t.Fatalf("the local workload is missing: %+v", dump)
	}
	if st := dump.Istiod; st == nil || !st.Connected || st.Addresses == 0 || st.LastResponse.IsZero() {
		t.Fatalf("/config_dump's istiod link: %+v, want connected with what istiod sent", st)
	}
	// The agent's own connections to istiod are marked: capture never sends them through its outbound proxy,
	// so nothing is connected to the outbound listener while no workload connects anywhere.
	if out := web.MustRun("ss", "-tnH", "state", "established", "( sport = :15001 )"); strings.TrimSpace(out) != "" {
		t.Fatalf("connections through the agent's outbound proxy while only the agent talks to istiod:\n%s\n%s", out, webAgent.Log())
	}
	url := fmt.Sprintf("http://%s:8080/", web.Addr)
	get := func(h *lab.Host, url string) (string, error) {
		return h.Run(lab.Timeout(10*time.Second), "curl", "-sS", "--max-time", "5", url)
	}
	// Callers Istio lets go around a waypoint: accepted, policy decides.
	for _, h := range []*lab.Host{sleep, ingress} {
		if out, err := get(h, url); err != nil || !strings.Contains(out, "hello from web") {
			t.Fatalf("%s -> web (waypoint-bound) before the policy: %v %q\n%s", h.Name, err, out, webAgent.Log())
		}
	}
	// The access-log line is written when the agent's side of the connection ends, which may be just after
	// curl has its answer.
	for _, id := range []string{"spiffe://cluster.local/ns/vms/sa/sleep", "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"} {
		webAgent.WaitLog(t, "src_identity="+id, 5*time.Second)
	}

	// A DNS ServiceEntry, by name: the DNS proxy answers its VIP, the agent
	// resolves its host when it connects and reaches it in plaintext.
	if out, err := get(web, "http://api.external.test:8080/"); err != nil || !strings.Contains(out, "hello from api") {
		t.Fatalf("web -> api.external.test: %v %q\n%s", err, out, webAgent.Log())
	}
	webAgent.WaitLog(t, "dst=240.240.30.1:8080", 5*time.Second) // the call went through the ServiceEntry's VIP

	// subjectAltNames: the endpoint is vms/vm-sa to istiod, and presents istio-system/istio-ingressgateway.
	waitDump(t, webAgent, "the ServiceEntry with subjectAltNames", func(d agentDump) bool { return d.hasService("san.vms.example.com") })
	if out, err := get(web, "http://240.240.30.2:8080/"); err != nil || !strings.Contains(out, "hello from api") {
		t.Fatalf("web -> a ServiceEntry whose endpoint presents its subjectAltName: %v %q\n%s", err, out, webAgent.Log())
	}

	// A policy created in the cluster, selecting the host's WorkloadEntry.
	clienttest.NewWriter[*securityclient.AuthorizationPolicy](t, s.KubeClient()).Create(&securityclient.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-sleep", Namespace: "vms"},
		Spec: securityapi.AuthorizationPolicy{
			Selector: &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": "web"}},
			Action:   securityapi.AuthorizationPolicy_DENY,
			Rules:    []*securityapi.Rule{{From: []*securityapi.Rule_From{{Source: &securityapi.Source{Principals: []string{"cluster.local/ns/vms/sa/sleep"}}}}}},
		},
	})
	waitDump(t, webAgent, "istiod's policy", func(d agentDump) bool { return d.hasPolicy("deny-sleep", "istiod") })
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := get(sleep, url)
		if err != nil && strings.Contains(webAgent.Log(), "vms/deny-sleep") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("istiod's DENY did not refuse sleep at web (curl err %v):\n%s", err, webAgent.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := get(ingress, url); err != nil || !strings.Contains(out, "hello from web") {
		t.Fatalf("the ingress gateway's identity was refused by a policy that denies sleep only: %v %q", err, out)
	}
}

// serveDNS answers A queries for names on h's address, port 53, until the test ends.
func serveDNS(t *testing.T, h *lab.Host, names map[string]netip.Addr) {
	t.Helper()
	pc, err := h.ListenPacket("udp", h.Addr.String()+":53")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, question := range q.Question {
			if a, ok := names[strings.ToLower(question.Name)]; ok && question.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
					A: a.AsSlice()})
			}
		}
		if len(m.Answer) == 0 && !slices.ContainsFunc(q.Question, func(q dns.Question) bool { _, ok := names[strings.ToLower(q.Name)]; return ok }) {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
}

type dumpWorkload struct {
	Name        string `json:"name"`
	UseWaypoint string `json:"useWaypoint"`
	Local       bool   `json:"local"`
}

type agentDump struct {
	Istiod *struct {
		Connected    bool      `json:"connected"`
		Addresses    int       `json:"addresses"`
		LastResponse time.Time `json:"lastResponse"`
	} `json:"istiod"`
	Workloads []dumpWorkload `json:"workloads"`
	Services  []struct {
		Hostname string `json:"hostname"`
	} `json:"services"`
	Policies []struct {
		Name   string `json:"name"`
		Origin string `json:"origin"`
	} `json:"policies"`
}

func (d agentDump) hasWorkload(name string) bool {
	return slices.ContainsFunc(d.Workloads, func(w dumpWorkload) bool { return w.Name == name })
}

// waypointOf is the waypoint the local workload name uses.
func (d agentDump) waypointOf(name string) string {
	for _, w := range d.Workloads {
		if w.Name == name && w.Local {
			return w.UseWaypoint
		}
	}
	return ""
}

func (d agentDump) hasService(host string) bool {
	for _, s := range d.Services {
		if s.Hostname == host {
			return true
		}
	}
	return false
}

func (d agentDump) hasPolicy(name, origin string) bool {
	for _, p := range d.Policies {
		if p.Name == name && p.Origin == origin {
			return true
		}
	}
	return false
}

func waitDump(t *testing.T, a *lab.Agent, what string, ok func(agentDump) bool) agentDump {
	t.Helper()
	var d agentDump
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		body, err := a.Admin("/config_dump")
		if err == nil && json.Unmarshal([]byte(body), &d) == nil && ok(d) {
			return d
		}
	}
	t.Fatalf("%s: not in %s's /config_dump after 30s:\n%s", what, a.Host.Name, a.Log())
	return d
}
