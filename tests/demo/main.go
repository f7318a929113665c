// Command demo brings up a small mesh of lab hosts (network namespaces) on this
// machine, each captured host running the real ambient-agent, shows traffic
// crossing it and what each host is doing. It cleans up on exit and on Ctrl-C.
// Run it with `make demo` (as root).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

func main() {
	once := flag.Bool("once", false, "show the mesh once and exit (for smoke tests)")
	flag.Parse()

	d := newDemoT()
	code := 0
	func() {
		defer d.recover(&code)
		run(d, *once)
	}()
	d.runCleanups()
	os.Exit(code)
}

// The demo mesh: h1, h2 and h4 are captured hosts with agents (h2 and h4 serve
// HTTP on 8080 and back the service "reviews"), h5 runs an agent as a
// waypoint for h4's service account, h3 is an ordinary host outside the mesh.
func run(d *demoT, once bool) {
	step("building the agent")
	bin, err := lab.BuildAgent(d.TempDir())
	if err != nil {
		d.Fatal(err)
	}
	step("creating 5 hosts (network namespaces on one bridge) and a mesh CA (ambient-agent ca init)")
	l := lab.New(d, 5)
	h1, h2, h3, h4, h5 := l.Hosts[0], l.Hosts[1], l.Hosts[2], l.Hosts[3], l.Hosts[4]
	h2.StartNginx("hello from h2", 8080)
	h4.StartNginx("hello from h4", 8080)
	for _, h := range []*lab.Host{h1, h2, h4, h5} {
		h.DefaultRoute()
	}
	// h1's resolver points anywhere: its DNS is captured into the agent's DNS proxy.
	h1.SetResolvConf("nameserver 192.0.2.53\n")
	step("making a gossip key (ambient-agent gossip keygen); h2 joins h1 by gossip, no static peers")
	keyFile := filepath.Join(d.TempDir(), "gossip.key")
	if _, err := h1.Run(lab.Timeout(10*time.Second), bin, "gossip", "keygen", "-out", keyFile); err != nil {
		d.Fatal(err)
	}
	var agents []*lab.Agent
	for _, pair := range [][2]*lab.Host{{h1, nil}, {h2, h1}, {h4, h1}, {h5, h1}} {
		h, seed := pair[0], pair[1]
		join := ""
		if seed != nil {
			join = fmt.Sprintf("%q", seed.Addr.String()+":7946")
		}
		cfg := fmt.Sprintf(`[node]
name = %[1]q
[identity]
dir = %[2]q
[gossip]
enabled = true
join = [%[5]s]
key_file = %[6]q
[policy]
dir = %[4]q
`, h.Name, h.Issue(bin, "default", "app-"+h.Name), h.Addr, filepath.Join(h.Dir, "policies"), join, keyFile)
		cfg += roleConfig(h.Name, h.Addr.String())
		agents = append(agents, h.StartAgent(bin, cfg))
	}
	for _, a := range agents {
		a.WaitReady(d, 20*time.Second)
	}
	waitPeers(d, agents)
	show(agents)

	url := fmt.Sprintf("http://%s:8080/", h2.Addr)
	step("h1 (captured) -> curl %s: carried over HBONE (mTLS, port 15008)", url)
	demoCurl(h1, url)
	step("h3 (outside the mesh) -> curl %s: plaintext, received by h2's agent on 15006", url)
	demoCurl(h3, url)
	time.Sleep(200 * time.Millisecond)
	step("h2's access log (one line per connection):")
	for _, line := range strings.Split(agents[1].Log(), "\n") {
		if strings.Contains(line, "msg=access") {
			fmt.Println("   ", line)
		}
	}
	serviceSteps(d, bin, h1, agents[3])

	step("h2 denies h1 with Istio's own AuthorizationPolicy YAML (a DENY for h1's identity):")
	policy := `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-h1
  namespace: default
spec:
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/app-h1"]
`
	fmt.Print(indent(policy))
	if err := os.MkdirAll(filepath.Join(h2.Dir, "policies"), 0o755); err != nil {
		d.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h2.Dir, "policies", "deny-h1.yaml"), []byte(policy), 0o644); err != nil {
		d.Fatal(err)
	}
	agents[1].WaitLog(d, "policies=1", 10*time.Second)
	step("h1 -> curl %s again: refused by h2's agent (HTTP/2 401 on the CONNECT)", url)
	demoCurl(h1, url)
	step("h2's metrics (istio_tcp_connections_opened/failed_total, as a ztunnel reports them):")
	if _, body, err := h2.Get("http://127.0.0.1:15020/metrics"); err == nil {
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "istio_tcp_connections_opened_total{") || strings.HasPrefix(line, "istio_tcp_connections_failed_total{") {
				fmt.Println("   ", line[:strings.Index(line, "{")], shorten(line))
			}
		}
	}
	if once {
		return
	}
	step("the mesh is up; press Ctrl-C to stop and clean up")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-sig:
			step("stopping agents and removing the lab")
			return
		case <-tick.C:
			show(agents)
		}
	}
}

func demoCurl(h *lab.Host, url string) {
	out, err := h.Run(lab.Timeout(10*time.Second), "curl", "-sS", "--max-time", "5", url)
	if err != nil {
		fmt.Printf("    %s: %v\n", h.Name, err)
		return
	}
	fmt.Printf("    %s got: %s\n", h.Name, strings.TrimSpace(out))
}

// shorten keeps the labels a reader looks at first.
func shorten(line string) string {
	var keep []string
	for _, l := range strings.Split(line[strings.Index(line, "{")+1:strings.LastIndex(line, "}")], ",") {
		for _, k := range []string{"reporter=", "source_principal=", "destination_workload=", "connection_security_policy=", "response_flags="} {
			if strings.HasPrefix(l, k) {
				keep = append(keep, l)
			}
		}
	}
	return "{" + strings.Join(keep, ",") + "} " + line[strings.LastIndex(line, "}")+2:]
}

func show(agents []*lab.Agent) {
	fmt.Printf("\n    %-5s %-12s %-6s %-8s %-26s %s\n", "HOST", "ADDRESS", "READY", "UPTIME", "LOCAL WORKLOAD", "IDENTITY")
	for _, a := range agents {
		var dump struct {
			Uptime    string `json:"uptime"`
			Ready     bool   `json:"ready"`
			Workloads []struct {
				Name           string `json:"name"`
				Namespace      string `json:"namespace"`
				ServiceAccount string `json:"serviceAccount"`
				Local          bool   `json:"local"`
			} `json:"workloads"`
		}
		body, err := a.Admin("/config_dump")
		if err == nil {
			err = json.Unmarshal([]byte(body), &dump)
		}
		if err != nil {
			fmt.Printf("    %-5s error: %v\n", a.Host.Name, err)
			continue
		}
		for _, w := range dump.Workloads {
			if w.Local {
				fmt.Printf("    %-5s %-12s %-6v %-8s %-26s spiffe://cluster.local/ns/%s/sa/%s\n", a.Host.Name, a.Host.Addr,
					dump.Ready, dump.Uptime, w.Namespace+"/"+w.Name, w.Namespace, w.ServiceAccount)
			}
		}
	}
	fmt.Printf("    %-5s %-12s (no agent: outside the mesh)\n", "h3", "10.77.0.13")
	fmt.Printf("    %-5s %-12s (waypoint for spiffe://cluster.local/ns/default/sa/app-h4)\n\n", "h5", "10.77.0.15")
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

// waitPeers waits until every agent knows the three workloads and the
// waypoint by gossip.
func waitPeers(d *demoT, agents []*lab.Agent) {
	for _, a := range agents {
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			body, err := a.Admin("/config_dump")
			var dump struct {
				Workloads []struct{} `json:"workloads"`
				Waypoints []struct{} `json:"waypoints"`
			}
			if err == nil && json.Unmarshal([]byte(body), &dump) == nil && len(dump.Workloads) >= 3 && len(dump.Waypoints) == 1 {
				break
			}
			if time.Now().After(deadline) {
				d.Fatalf("%s did not learn its peers by gossip", a.Host.Name)
			}
		}
	}
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

// roleConfig is what each demo host adds to the common config: a workload,
// the service it backs, the DNS capture of the client, or the waypoint role.
func roleConfig(name, addr string) string {
	workload := fmt.Sprintf(`[[workload]]
name = "app-%[1]s"
service_account = "app-%[1]s"
addresses = [%[2]q]
labels = { app = "app-%[1]s", version = "v1" }
`, name, addr)
	if name == "h4" { // h4 names its waypoint (h5's role); nothing is bound by service account alone
		workload += "use_waypoint = \"waypoint\"\n"
	}
	switch name {
	case "h1":
		return workload + "[dns]\ncapture = true\nupstreams = [\"192.0.2.53\"]\n"
	case "h5":
		return fmt.Sprintf(`[waypoint]
enabled = true
for_service_account = "app-h4"
service_account = "app-h5"
addresses = [%q]
`, addr)
	}
	return workload + fmt.Sprintf(`[[service]]
name = "reviews"
ports = [{ port = 9080, target_port = 8080 }]
workloads = ["app-%s"]
# two service accounts back reviews (h2's and h4's): each declaration allows both
service_accounts = ["app-h2", "app-h4"]
`, name)
}

// serviceSteps shows the service: DNS by name, load balancing over h2 and
// h4, and h5's waypoint in the path to h4.
func serviceSteps(d *demoT, bin string, h1 *lab.Host, waypoint *lab.Agent) {
	step("h1 resolves the service by name through the agent's DNS proxy (captured port 53 -> 127.0.0.1:15053):")
	out, err := h1.Run(lab.Timeout(10*time.Second), "getent", "ahostsv4", "reviews.default.svc.cluster.local")
	if err != nil {
		d.Fatal(err)
	}
	fmt.Print(indent(firstLine(out)))
	step("h1's view of the service (ambient-agent services): a VIP allocated from 240.240.0.0/16, two endpoints")
	if out, err := h1.Run(lab.Timeout(10*time.Second), bin, "services"); err == nil {
		fmt.Print(indent(out))
	}
	url := "http://reviews.default.svc.cluster.local:9080/"
	step("h1 -> curl %s six times: spread over h2 and h4", url)
	for range 6 {
		demoCurl(h1, url)
	}
	time.Sleep(200 * time.Millisecond)
	step("h5, the waypoint for h4's service account, carried the requests for h4 (its access log):")
	for _, line := range strings.Split(waypoint.Log(), "\n") {
		if strings.Contains(line, "route=waypoint") {
			fmt.Println("   ", line)
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i+1]
	}
	return s
}
