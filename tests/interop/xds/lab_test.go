package xds

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	istioapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	networkingclient "istio.io/client-go/pkg/apis/networking/v1"
	securityclient "istio.io/client-go/pkg/apis/security/v1"
	istioxds "istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/kube/kclient/clienttest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// The real agent joins istiod: istiod's discovery server runs in this test's
// process, listening inside lab host h1; h2 runs the agent with [istio]
// discovery and a workload istiod knows as a WorkloadEntry; h3 is a captured
// client. The cluster's objects show in h2's /config_dump, and a policy created
// in the cluster, selecting h2's WorkloadEntry, denies h3's connection at h2.
func TestAgentEnforcesIstiodPolicy(t *testing.T) {
	lab.Require(t, "nginx", "curl")
	l := lab.New(t, 3)
	istiodHost, web, sleep := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	webEntry := &networkingclient.WorkloadEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "vms",
			Labels: map[string]string{"networking.istio.io/tunnel": "http", "app": "web"}},
		Spec: istioapi.WorkloadEntry{Address: web.Addr.String(), ServiceAccount: "web",
			Labels: map[string]string{"networking.istio.io/tunnel": "http", "app": "web"}},
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
	s := istioxds.NewFakeDiscoveryServer(t, istioxds.FakeOptions{
		KubernetesObjects: []runtime.Object{namespace("vms"), webEntry, db, dbService},
		ListenerBuilder:   func() (net.Listener, error) { return istiodHost.Listen("tcp", istiodHost.Addr.String()+":15010") },
	})

	web.StartNginx("hello from web", 8080)
	web.Issue(agentBinary, "vms", "web")
	sleep.Issue(agentBinary, "vms", "sleep")
	webAgent := web.StartAgent(agentBinary, fmt.Sprintf(`[node]
name = "web-host"
drain_timeout = "2s"
[identity]
dir = %q
[istio]
enabled = true
address = "%s:15010"
insecure_plaintext = true
[[workload]]
name = "web"
namespace = "vms"
service_account = "web"
addresses = [%q]
labels = { app = "web" }
`, web.IdentityDir(), istiodHost.Addr, web.Addr))
	sleepAgent := sleep.StartAgent(agentBinary, fmt.Sprintf(`[node]
name = "sleep-host"
drain_timeout = "2s"
[identity]
dir = %q
[[workload]]
name = "sleep"
namespace = "vms"
service_account = "sleep"
addresses = [%q]
[[remote_workload]]
name = "web"
namespace = "vms"
service_account = "web"
addresses = [%q]
`, sleep.IdentityDir(), sleep.Addr, web.Addr))
	webAgent.WaitReady(t, 30*time.Second) // ready includes the first answer from istiod
	sleepAgent.WaitReady(t, 20*time.Second)

	dump := waitDump(t, webAgent, "the cluster's workload and service", func(d agentDump) bool {
		return d.hasWorkload("db") && d.hasService("db.vms.example.com")
	})
	if !dump.hasWorkload("web") {
		t.Fatalf("the local workload is missing: %+v", dump)
	}
	if st := dump.Istiod; st == nil || !st.Connected || st.Addresses == 0 || st.LastResponse.IsZero() {
		t.Fatalf("/config_dump's istiod link: %+v, want connected with what istiod sent", st)
	}
	url := fmt.Sprintf("http://%s:8080/", web.Addr)
	if out, err := sleep.Run(lab.Timeout(10*time.Second), "curl", "-sS", "--max-time", "5", url); err != nil || !strings.Contains(out, "hello from web") {
		t.Fatalf("sleep -> web before the policy: %v %q", err, out)
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
		_, err := sleep.Run(lab.Timeout(10*time.Second), "curl", "-sS", "--max-time", "5", url)
		if err != nil && strings.Contains(webAgent.Log(), "vms/deny-sleep") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("istiod's DENY did not refuse sleep at web (curl err %v):\n%s", err, webAgent.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type named struct {
	Name string `json:"name"`
}

type agentDump struct {
	Istiod *struct {
		Connected    bool      `json:"connected"`
		Addresses    int       `json:"addresses"`
		LastResponse time.Time `json:"lastResponse"`
	} `json:"istiod"`
	Workloads []named `json:"workloads"`
	Services  []struct {
		Hostname string `json:"hostname"`
	} `json:"services"`
	Policies []struct {
		Name   string `json:"name"`
		Origin string `json:"origin"`
	} `json:"policies"`
}

func (d agentDump) hasWorkload(name string) bool {
	return slices.Contains(d.Workloads, named{name})
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
