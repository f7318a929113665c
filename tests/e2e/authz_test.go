package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

const denySleep = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-sleep
  namespace: default
spec:
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
`

const strictMTLS = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: default
spec:
  mtls:
    mode: STRICT
`

const denyOther = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-other
  namespace: default
spec:
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/other"]
`

// authzLab: A (sa sleep) and C (sa other) are captured clients, B the captured
// server with a policy directory, D a host outside the mesh.
type authzLab struct {
	*lab.Lab
	a, b, c, d *lab.Host
	agentB     *lab.Agent
	policyDir  string
}

func newAuthzLab(t *testing.T, policies ...string) *authzLab {
	lab.Require(t, "nginx", "curl", "nc")
	l := lab.New(t, 4)
	z := &authzLab{Lab: l, a: l.Hosts[0], b: l.Hosts[1], c: l.Hosts[2], d: l.Hosts[3]}
	z.policyDir = filepath.Join(z.b.Dir, "policies")
	if err := os.MkdirAll(z.policyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, p := range policies {
		z.writePolicy(t, fmt.Sprintf("p%d.yaml", i), p)
	}
	z.b.StartNginx(marker, 8080)
	z.b.Start("sink", "nc", "-lk", "-p", "9000")
	z.a.Issue(agentBin, "default", "sleep")
	z.c.Issue(agentBin, "default", "other")
	z.b.Issue(agentBin, "default", "server")
	agents := []*lab.Agent{
		z.a.StartAgent(agentBin, workloadConfig(z.a, "sleep", "", z.b)),
		z.c.StartAgent(agentBin, workloadConfig(z.c, "other", "", z.b)),
	}
	z.agentB = z.b.StartAgent(agentBin, workloadConfig(z.b, "server", fmt.Sprintf("[policy]\ndir = %q\n", z.policyDir)))
	agents = append(agents, z.agentB)
	for _, a := range agents {
		a.WaitReady(t, 15*time.Second)
	}
	return z
}

func (z *authzLab) writePolicy(t *testing.T, name, body string) {
	t.Helper()
	tmp := filepath.Join(z.policyDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(z.policyDir, name)); err != nil {
		t.Fatal(err)
	}
}

func (z *authzLab) url() string { return fmt.Sprintf("http://%s:8080/", z.b.Addr) }

// A DENY policy for one identity refuses that client while another connects;
// the denied connection is counted with DENY.
func TestDenyPolicyForOneIdentity(t *testing.T) {
	z := newAuthzLab(t, denySleep)
	if out, err := curl(z.a, z.url()); err == nil {
		t.Fatalf("A (sa sleep) got through a DENY policy: %q", out)
	}
	if out, err := curl(z.c, z.url()); err != nil || !strings.Contains(out, marker) {
		t.Fatalf("C (sa other) was refused: %v %q", err, out)
	}
	z.agentB.WaitLog(t, "response_flags=DENY", 5*time.Second)
	metrics := scrape(t, z.b)
	denied := map[string]string{"reporter": "destination", "response_flags": "DENY",
		"source_principal": "spiffe://cluster.local/ns/default/sa/sleep"}
	if n, ok := metricValue(t, metrics, "istio_tcp_connections_failed_total", denied); !ok || n < 1 {
		t.Errorf("the denied connection is not counted with DENY:\n%s", grepIstio(metrics))
	}
	if out := z.b.MustRun(agentBin, "policies"); !strings.Contains(out, "deny-sleep") || !strings.Contains(out, "DENY") {
		t.Errorf("policies does not list deny-sleep:\n%s", out)
	}
	if len(z.b.NginxAccessLog()) != 1 {
		t.Errorf("nginx saw %d requests, want only C's", len(z.b.NginxAccessLog()))
	}
}

// STRICT PeerAuthentication blocks plaintext from outside the mesh while HBONE
// clients pass.
func TestStrictMTLSBlocksPlaintext(t *testing.T) {
	z := newAuthzLab(t, strictMTLS)
	if out, err := curl(z.d, z.url()); err == nil {
		t.Fatalf("plaintext from D got through STRICT mTLS: %q", out)
	}
	for _, h := range []*lab.Host{z.a, z.c} {
		if out, err := curl(h, z.url()); err != nil || !strings.Contains(out, marker) {
			t.Fatalf("HBONE client %s refused under STRICT: %v %q", h.Name, err, out)
		}
	}
	if n := len(accessLog(z.b, func(log []string) bool { return len(log) >= 2 })); n != 2 {
		t.Errorf("nginx saw %d requests, want the 2 HBONE ones", n)
	}
}

// Adding a DENY policy while a connection is open closes it.
func TestPolicyChangeClosesOpenConnection(t *testing.T) {
	z := newAuthzLab(t)
	// A long-lived connection from C to B's sink, and one from A.
	fromC := z.c.Start("nc-c", "bash", "-c", fmt.Sprintf("exec nc %s 9000 < <(sleep 60)", z.b.Addr))
	fromA := z.a.Start("nc-a", "bash", "-c", fmt.Sprintf("exec nc %s 9000 < <(sleep 60)", z.b.Addr))
	deadline := time.Now().Add(10 * time.Second)
	for z.openTunnels(t) < 2 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := z.openTunnels(t); n != 2 {
		t.Fatalf("%v tunnels open on B, want 2", n)
	}
	z.writePolicy(t, "deny-other.yaml", denyOther)
	z.agentB.WaitLog(t, "connections_closed=1", 10*time.Second)
	if code, exited := fromC.Wait(5 * time.Second); !exited {
		t.Fatalf("C's connection still open after the DENY policy")
	} else {
		t.Logf("C's nc exited %d once denied", code)
	}
	if fromA.Exited() {
		t.Fatalf("A's connection was closed too:\n%s", fromA.Log())
	}
	// The access log line is written when the tunnel's handler returns, which
	// may be just after the client has seen the reset.
	z.agentB.WaitLog(t, "response_flags=DENY", 5*time.Second)
}

func (z *authzLab) openTunnels(t *testing.T) float64 {
	n, _ := metricValue(t, scrape(t, z.b), "istio_tcp_sockets_open", map[string]string{"reporter": "destination"})
	return n
}

// workloadConfig is the configuration of a host whose workload runs as account
// sa, with the given peers' workloads declared as the account "server".
func workloadConfig(h *lab.Host, sa, tables string, peers ...*lab.Host) string {
	c := lab.AgentConfig{Host: h, Workloads: []lab.Workload{h.App(sa)}, Tables: tables}
	for _, p := range peers {
		r := p.RemoteApp("server")
		r.Node = "" // declared without a node, as an operator may
		c.Remote = append(c.Remote, r)
	}
	return c.String()
}
