package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// roguePeer is the attacker of docs/gossip.md's threat model: a gossip member
// that holds the key and one valid certificate, and publishes a record of its
// choosing signed with it. It is agent/internal/discovery's test binary run in
// its rogue mode (rogue_peer_test.go): discovery's own code, with no local
// validation of what it publishes.
var roguePeer = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp(scratch, "ambient-rogue-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "roguepeer")
	cmd := exec.Command("go", "test", "-c", "-o", bin, "./agent/internal/discovery")
	cmd.Dir = lab.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the rogue peer: %w\n%s", err, out)
	}
	return bin, nil
})

// startRogue runs the rogue peer on h as identity spiffe://cluster.local/ns/NS/sa/SA, publishing record.
func startRogue(t *testing.T, h *lab.Host, key string, seed *lab.Host, ns, sa string, signAny bool, record map[string]any) *lab.Proc {
	t.Helper()
	bin, err := roguePeer()
	if err != nil {
		t.Fatal(err)
	}
	spec := map[string]any{
		"node": h.Name, "bind": h.Addr.String() + ":7946", "join": []string{seed.Addr.String() + ":7946"}, "keyFile": key,
		"identityDir": h.IdentityDir(), "identity": fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", ns, sa),
		"signAnyIdentity": signAny, "record": record,
	}
	b, _ := json.Marshal(spec)
	path := filepath.Join(h.Dir, "rogue.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return h.Start("rogue peer", "env", "AMBIENT_ROGUE_PEER="+path, bin)
}

// watchLink counts, in h's namespace, every TCP or UDP packet from the honest
// hosts that is not gossip (to or from port 7946): traffic the rogue must
// never receive.
func watchLink(t *testing.T, h *lab.Host, honest ...*lab.Host) func() int {
	t.Helper()
	var addrs []string
	for _, o := range honest {
		addrs = append(addrs, o.Addr.String())
	}
	set := strings.Join(addrs, ", ")
	h.MustRun("nft", "add", "table", "inet", "rogue_watch")
	h.MustRun("nft", "add", "chain", "inet", "rogue_watch", "in", "{ type filter hook input priority -300; }")
	// One rule per port test: nft 1.0.6 merges "tcp sport != X tcp dport != Y" into one comparison of both.
	for _, m := range [][]string{{"tcp", "sport"}, {"tcp", "dport"}, {"udp", "sport"}, {"udp", "dport"}} {
		h.MustRun("nft", "add", "rule", "inet", "rogue_watch", "in", m[0], m[1], "7946", "return")
	}
	h.MustRun("nft", "add", "rule", "inet", "rogue_watch", "in", "ip", "saddr", "{ "+set+" }", "meta", "l4proto", "{ tcp, udp }", "counter")
	packets := regexp.MustCompile(`packets (\d+)`)
	return func() int {
		n := 0
		for _, m := range packets.FindAllStringSubmatch(h.MustRun("nft", "list", "table", "inet", "rogue_watch"), -1) {
			v, _ := strconv.Atoi(m[1])
			n += v
		}
		return n
	}
}

func addrs(h *lab.Host) []string { return []string{h.Addr.String()} }

// Three rogue members attack a mesh of a client, a backend (whose
// certificate proves its address) and a waypoint: one in another namespace,
// one in the victim's namespace with another service account, one claiming
// the victim's identity. Every attack of issue 17 is attempted; the client's
// traffic still reaches the right backend through the right waypoint,
// nothing reaches a rogue, and doctor names every attempt.
func TestRogueMembersCannotHijack(t *testing.T) {
	lab.Require(t, "nginx", "curl", "nft", "getent")
	if _, err := roguePeer(); err != nil {
		t.Fatal(err)
	}
	l := lab.New(t, 6)
	key := gossipKey(t, l)
	client, backend, wpHost, rogueA, rogueB, rogueC := l.Hosts[0], l.Hosts[1], l.Hosts[2], l.Hosts[3], l.Hosts[4], l.Hosts[5]
	for _, h := range l.Hosts {
		h.DefaultRoute()
	}
	client.Issue(agentBin, "default", "client")
	backend.IssueWithIPs(agentBin, "default", "reviews", backend.Addr.String())
	wpHost.Issue(agentBin, "default", "waypoint")
	rogueA.Issue(agentBin, "evil", "x")
	rogueB.Issue(agentBin, "default", "x")
	rogueC.Issue(agentBin, "default", "x")
	backend.StartNginx("reviews from h2", 8080)
	wpHost.StartNginx("secret of the waypoint host", 80)
	var watched []func() int
	for _, r := range []*lab.Host{rogueA, rogueB, rogueC} {
		r.StartNginx("rogue "+r.Name, 80, 8080, 9080, 15008)
		watched = append(watched, watchLink(t, r, client, backend, wpHost))
	}

	client.SetResolvConf("nameserver 192.0.2.53\n")
	clientAgent := client.StartAgent(agentBin, lab.AgentConfig{Host: client, Gossip: &lab.Gossip{KeyFile: key, Seed: client}, Tables: fmt.Sprintf(`
[[workload]]
name = "client"
service_account = "client"
addresses = [%q]
[dns]
capture = true
upstreams = ["192.0.2.53"]
`, client.Addr)}.String())
	backendAgent := backend.StartAgent(agentBin, lab.AgentConfig{Host: backend, Gossip: &lab.Gossip{KeyFile: key, Seed: client}, Tables: fmt.Sprintf(`
[[workload]]
name = "reviews"
service_account = "reviews"
addresses = [%q]
[[service]]
name = "reviews"
use_waypoint = "waypoint"
ports = [{ port = 9080, target_port = 8080 }]
workloads = ["reviews"]
`, backend.Addr)}.String())
	wpAgent := wpHost.StartAgent(agentBin, lab.AgentConfig{Host: wpHost, Gossip: &lab.Gossip{KeyFile: key, Seed: client}, Tables: fmt.Sprintf(`
[waypoint]
enabled = true
name = "waypoint"
service_account = "waypoint"
addresses = [%q]
`, wpHost.Addr)}.String())
	for _, a := range []*lab.Agent{clientAgent, backendAgent, wpAgent} {
		a.WaitReady(t, 20*time.Second)
	}
	// The honest mesh is established everywhere before the rogues come (an agent that meets a contest with no
	// history gives the claim to no one: docs/gossip.md).
	for _, a := range []*lab.Agent{clientAgent, backendAgent, wpAgent} {
		waitMesh(t, a, 40*time.Second, "the honest mesh, settled", func(m meshDump) bool {
			return len(m.Waypoints) == 1 && m.serviceVIP("reviews") != "" && len(m.Services) == 1 && m.GossipSettled
		})
	}

	// Rogue A, evil/x: the backend's address (HBONE through its own waypoint, and plaintext), the metadata
	// VIP, an off-mesh hostname, and a service that names the honest waypoint with a plaintext endpoint on
	// the waypoint's host (SSRF).
	startRogue(t, rogueA, key, client, "evil", "x", false, map[string]any{
		"workloads": []map[string]any{
			{"name": "hijack", "namespace": "evil", "serviceAccount": "x", "trustDomain": "cluster.local", "addresses": addrs(backend),
				"tunnelProtocol": "HBONE", "healthy": true, "capacity": 1000, "useWaypoint": "evil/wp", "ports": []int{8080}},
			{"name": "plain", "namespace": "evil", "serviceAccount": "x", "trustDomain": "cluster.local", "addresses": addrs(backend),
				"tunnelProtocol": "NONE", "healthy": true, "ports": []int{9999}},
			{"name": "ssrf-target", "namespace": "evil", "serviceAccount": "x", "trustDomain": "cluster.local", "addresses": addrs(wpHost),
				"tunnelProtocol": "NONE", "healthy": true},
		},
		"services": []map[string]any{
			{"name": "ssrf", "namespace": "evil", "hostname": "ssrf.evil.svc.cluster.local", "ports": []map[string]int{{"port": 80, "targetPort": 80}},
				"workloads": []string{"evil/ssrf-target"}, "useWaypoint": "default/waypoint"},
			{"name": "metadata", "namespace": "evil", "hostname": "metadata.evil.svc.cluster.local", "addresses": []string{"169.254.169.254"},
				"ports": []map[string]int{{"port": 80, "targetPort": 8080}}, "workloads": []string{"evil/hijack"}},
			{"name": "db", "namespace": "evil", "hostname": "db.corp.example.com", "ports": []map[string]int{{"port": 5432, "targetPort": 8080}},
				"workloads": []string{"evil/hijack"}},
		},
		"waypoint": map[string]any{"name": "wp", "namespace": "evil", "serviceAccount": "x", "trustDomain": "cluster.local",
			"addresses": addrs(rogueA)},
	})
	// Rogue B, default/x: backs default/reviews at the largest capacity, and runs a waypoint named as the honest one.
	startRogue(t, rogueB, key, client, "default", "x", false, map[string]any{
		"workloads": []map[string]any{
			{"name": "intruder", "namespace": "default", "serviceAccount": "x", "trustDomain": "cluster.local", "addresses": addrs(rogueB),
				"tunnelProtocol": "HBONE", "healthy": true, "capacity": 1000},
		},
		"services": []map[string]any{
			{"name": "reviews", "namespace": "default", "hostname": "reviews.default.svc.cluster.local",
				"ports": []map[string]int{{"port": 9080, "targetPort": 8080}}, "workloads": []string{"default/intruder"}, "useWaypoint": "waypoint"},
		},
		"waypoint": map[string]any{"name": "waypoint", "namespace": "default", "serviceAccount": "x", "trustDomain": "cluster.local",
			"addresses": addrs(rogueB)},
	})
	// Rogue C, default/x: claims the backend's own identity, signed with its own key (a proof of an identity the
	// record does not claim: bad_proof).
	startRogue(t, rogueC, key, client, "default", "x", true, map[string]any{
		"workloads": []map[string]any{
			{"name": "twin", "namespace": "default", "serviceAccount": "reviews", "trustDomain": "cluster.local", "addresses": addrs(rogueC),
				"tunnelProtocol": "HBONE", "healthy": true},
		},
	})

	// Every attempt is named by doctor on the client.
	want := []string{
		"address " + backend.Addr.String() + " claimed by h4/evil/hijack: outranked; using h2/default/reviews",
		"address " + backend.Addr.String() + " claimed by h4/evil/plain: plaintext_claim_on_hbone_address; using h2/default/reviews",
		"address " + wpHost.Addr.String() + " claimed by h4/evil/ssrf-target: plaintext_claim_on_hbone_address; not used",
		"service evil/metadata declared by h4: an explicit VIP outside the allocation ranges",
		"service evil/db declared by h4: hostname outside the mesh domains",
		"service default/reviews declared by h5: a backing workload's service account is not one the service allows",
		"waypoint default/waypoint on h5 as spiffe://cluster.local/ns/default/sa/x: the name default/waypoint is bound to spiffe://cluster.local/ns/default/sa/waypoint",
		"gossip records: rejected:", "bad_proof=",
	}
	var doctor string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		doctor, _ = client.Run(lab.Timeout(10*time.Second), agentBin, "doctor")
		if missing(doctor, want) == nil {
			break
		}
	}
	if m := missing(doctor, want); m != nil {
		t.Fatalf("doctor on the client does not name %q:\n%s", m, doctor)
	}
	t.Logf("doctor on the client:\n%s", doctor)

	// The backend's address: HBONE to the backend itself, never the rogue's waypoint.
	before := len(backend.NginxAccessLog())
	for range 10 {
		mustCurl(t, client, fmt.Sprintf("http://%s:8080/", backend.Addr), "reviews from h2")
	}
	if got := len(accessLog(backend, func(l []string) bool { return len(l) >= before+10 })) - before; got < 10 {
		t.Errorf("the backend served %d of 10 requests to its address", got)
	}
	// The service: through the honest waypoint to the honest backend, 20 of 20.
	wpBefore := countLines(wpAgent.Log(), "route=waypoint", "dst_service=reviews.default.svc.cluster.local", "response_flags=-")
	for range 20 {
		mustCurl(t, client, "http://reviews.default.svc.cluster.local:9080/", "reviews from h2")
	}
	waitCount(t, wpAgent, wpBefore+20, 5*time.Second, "route=waypoint", "dst_service=reviews.default.svc.cluster.local", "response_flags=-")
	// Off-mesh and metadata names are not answered; the metadata address is nobody's service.
	for _, name := range []string{"db.corp.example.com", "metadata.evil.svc.cluster.local"} {
		if out, err := client.Run(lab.Timeout(10*time.Second), "getent", "ahostsv4", name); err == nil {
			t.Errorf("the DNS proxy answered %s: %q", name, out)
		}
	}
	if m := waitMesh(t, clientAgent, time.Second, "state", func(meshDump) bool { return true }); m.serviceVIP("metadata") != "" || m.serviceVIP("db") != "" {
		t.Errorf("the rogue's services are routed: %+v", m.Services)
	}
	// SSRF through the honest waypoint: refused before anything is dialed.
	if out, err := curl(client, "http://ssrf.evil.svc.cluster.local/"); err == nil {
		t.Errorf("a service of evil reached through the waypoint: %q", out)
	}
	waitCount(t, wpAgent, 1, 5*time.Second, "route=waypoint", "names waypoint default/waypoint of another namespace")
	if log := wpHost.NginxAccessLog(); len(log) != 0 {
		t.Errorf("the waypoint host's own port 80 was reached: %v", log)
	}

	for i, count := range watched {
		if n := count(); n != 0 {
			t.Errorf("rogue h%d received %d packets from the honest hosts outside gossip:\n%s", i+4, n,
				l.Hosts[i+3].MustRun("nft", "list", "table", "inet", "rogue_watch"))
		}
	}
	metrics := scrape(t, client)
	if v, ok := metricValue(t, metrics, "ambient_agent_gossip_rejected_total", map[string]string{"reason": "bad_proof"}); !ok || v < 1 {
		t.Errorf("rejected records not counted:\n%s", grepMetric(metrics, "ambient_agent_"))
	}
	if v, ok := metricValue(t, metrics, "ambient_agent_discovery_conflicts", map[string]string{"kind": "service", "reason": "service_account_not_allowed"}); !ok || v != 1 {
		t.Errorf("conflicts not counted:\n%s", grepMetric(metrics, "ambient_agent_discovery"))
	}
}

// missing returns the first of want that s does not contain, nil when none.
func missing(s string, want []string) []string {
	for _, w := range want {
		if !strings.Contains(s, w) {
			return []string{w}
		}
	}
	return nil
}

func grepMetric(body, prefix string) string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
