package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// waypointLab: h1 a captured client, h2 the backend "reviews" (service
// account reviews), h3 a backend "ratings" that opts out of waypoints, h4 the
// namespace waypoint, h5 a service-account waypoint for "reviews" (started
// later), h6 a host outside the mesh.
type waypointLab struct {
	*lab.Lab
	client, reviews, ratings, nsWP, saWP, outside *lab.Host
	agents                                        map[string]*lab.Agent
	key                                           string
}

// reviewsBody: the workload names its waypoint (%[2]q); the service names
// ns-wp. Nothing is bound by namespace or service account alone. %[3]s adds
// to [policy] (hairpin enforcement, opt-in); %[4]q is its directory.
const reviewsBody = `
[[workload]]
name = "reviews"
service_account = "reviews"
addresses = [%[1]q]
use_waypoint = %[2]q
[[service]]
name = "reviews"
use_waypoint = "ns-wp"
ports = [{ port = 9080, target_port = 8080 }]
workloads = ["reviews"]
[[service]]
name = "mixed"
use_waypoint = "none"
ports = [{ port = 9080, target_port = 8080 }]
workloads = ["reviews"]
# backed by two service accounts: each host's declaration allows both
service_accounts = ["reviews", "ratings"]
[policy]
dir = %[4]q
%[3]s
`

// hairpinOn is the opt-in: plaintext callers of reviews go through its
// waypoint, as the host's dedicated hairpin identity.
const hairpinOn = `waypoint_enforcement = "hairpin"
hairpin_service_account = "hairpin"`

const ratingsBody = `
[[workload]]
name = "ratings"
service_account = "ratings"
use_waypoint = "none"
addresses = [%q]
[[service]]
name = "mixed"
use_waypoint = "none"
ports = [{ port = 9080, target_port = 8080 }]
workloads = ["ratings"]
service_accounts = ["reviews", "ratings"]
`

const waypointBody = `
[waypoint]
enabled = true
name = %q
service_account = %q
for_service_account = %q
addresses = [%q]
[policy]
dir = %q
`

// denyClientAtWaypoint attaches to the waypoint sa-wp (targetRefs): it
// denies the client, whatever the target.
const denyClientAtWaypoint = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-client
  namespace: default
spec:
  targetRefs:
  - group: gateway.networking.k8s.io
    kind: Gateway
    name: sa-wp
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/client"]
`

func newWaypointLab(t *testing.T) *waypointLab {
	lab.Require(t, "nginx", "curl")
	l := lab.New(t, 6)
	w := &waypointLab{Lab: l, client: l.Hosts[0], reviews: l.Hosts[1], ratings: l.Hosts[2], nsWP: l.Hosts[3],
		saWP: l.Hosts[4], outside: l.Hosts[5], agents: map[string]*lab.Agent{}, key: gossipKey(t, l)}
	for _, h := range l.Hosts[:5] {
		h.DefaultRoute()
	}
	w.reviews.StartNginx("reviews from h2", 8080)
	w.ratings.StartNginx("ratings from h3", 8080)
	w.client.Issue(agentBin, "default", "client")
	w.reviews.Issue(agentBin, "default", "reviews")
	w.reviews.Issue(agentBin, "default", "hairpin")
	w.ratings.Issue(agentBin, "default", "ratings")
	w.nsWP.Issue(agentBin, "default", "ns-wp")
	w.saWP.Issue(agentBin, "default", "sa-wp")
	// The client also believes in a workload at an address nobody has: the
	// waypoint must refuse it as a target.
	w.start(t, w.client, fmt.Sprintf(`
[[workload]]
name = "client"
service_account = "client"
addresses = [%q]
[[remote_workload]]
name = "ghost"
addresses = ["10.77.0.99"]
use_waypoint = "ns-wp"
`, w.client.Addr))
	w.start(t, w.reviews, w.reviewsConfig("ns-wp", ""))
	w.start(t, w.ratings, fmt.Sprintf(ratingsBody, w.ratings.Addr))
	w.start(t, w.nsWP, fmt.Sprintf(waypointBody, "ns-wp", "ns-wp", "", w.nsWP.Addr, filepath.Join(w.nsWP.Dir, "policies")))
	return w
}

// reviewsConfig is reviews' configuration naming waypoint wp, with extra in [policy].
func (w *waypointLab) reviewsConfig(wp, extra string) string {
	return fmt.Sprintf(reviewsBody, w.reviews.Addr, wp, extra, filepath.Join(w.reviews.Dir, "policies"))
}

func (w *waypointLab) start(t *testing.T, h *lab.Host, body string) {
	a := h.StartAgent(agentBin, lab.AgentConfig{Host: h, Gossip: &lab.Gossip{KeyFile: w.key, Seed: w.client}, Tables: body}.String())
	a.WaitReady(t, 20*time.Second)
	w.agents[h.Name] = a
}

func TestWaypoints(t *testing.T) {
	w := newWaypointLab(t)
	client, reviewsAgent := w.agents["h1"], w.agents["h2"]
	m := waitMesh(t, client, 30*time.Second, "namespace waypoint known", func(m meshDump) bool {
		return len(m.Waypoints) == 1 && m.serviceVIP("reviews") != "" && m.serviceVIP("mixed") != "" && len(m.Services) == 2
	})
	vip := m.serviceVIP("reviews")
	nsAgent := w.agents["h4"]

	// A service with a waypoint: the waypoint sees the service as the target.
	mustCurl(t, w.client, fmt.Sprintf("http://%s:9080/", vip), "reviews from h2")
	waitCount(t, nsAgent, 1, 5*time.Second, "msg=access", "direction=inbound", "route=waypoint",
		"dst="+vip+":9080", "dst_service=reviews.default.svc.cluster.local", "src_identity=spiffe://cluster.local/ns/default/sa/client")
	metrics := scrape(t, w.nsWP)
	if v, ok := metricValue(t, metrics, "istio_tcp_connections_opened_total", map[string]string{
		"destination_service": "reviews.default.svc.cluster.local", "source_principal": "spiffe://cluster.local/ns/default/sa/client"}); !ok || v < 1 {
		t.Errorf("waypoint metrics do not show the service target:\n%s", grepIstio(metrics))
	}
	// The backend sees the waypoint as its caller.
	waitCount(t, reviewsAgent, 1, 5*time.Second, "direction=inbound", "route=hbone", "src_identity=spiffe://cluster.local/ns/default/sa/ns-wp")

	// A workload address: the waypoint sees the workload as the target.
	mustCurl(t, w.client, fmt.Sprintf("http://%s:8080/", w.reviews.Addr), "reviews from h2")
	waitCount(t, nsAgent, 1, 5*time.Second, "route=waypoint", fmt.Sprintf("dst=%s:8080", w.reviews.Addr), "response_flags=-")

	// A target the waypoint does not manage is refused.
	if out, err := curl(w.client, "http://10.77.0.99:80/"); err == nil {
		t.Errorf("a CONNECT for an unmanaged target went through: %q", out)
	}
	waitCount(t, nsAgent, 1, 5*time.Second, "route=waypoint", "dst=10.77.0.99:80", "not a service or workload managed by waypoint default/ns-wp")

	// A service-account waypoint for reviews takes the workload over once the
	// workload names it (its own declaration; a waypoint's arrival alone
	// changes nothing).
	saPolicies := filepath.Join(w.saWP.Dir, "policies")
	w.start(t, w.saWP, fmt.Sprintf(waypointBody, "sa-wp", "sa-wp", "reviews", w.saWP.Addr, saPolicies))
	saAgent := w.agents["h5"]
	waitMesh(t, client, 30*time.Second, "service-account waypoint known", func(m meshDump) bool { return len(m.Waypoints) == 2 })
	w.reviews.WriteConfig(lab.AgentConfig{Host: w.reviews, Gossip: &lab.Gossip{KeyFile: w.key, Seed: w.client}, Tables: w.reviewsConfig("sa-wp", "")}.String())
	reviewsAgent.Reload(t)
	// A broadcast can miss a member; memberlist's push/pull (every 30 s) then brings the record: wait past one.
	for _, a := range []*lab.Agent{client, saAgent} { // the waypoint serves only what it knows names it
		waitMesh(t, a, gossipConverges, "reviews names sa-wp", func(m meshDump) bool { return m.workloadWaypoint("reviews") == "sa-wp" })
	}
	waitMesh(t, reviewsAgent, gossipConverges, "service-account waypoint known by the backend", func(m meshDump) bool { return len(m.Waypoints) == 2 })
	before := countLines(nsAgent.Log(), "route=waypoint", fmt.Sprintf("dst=%s:8080", w.reviews.Addr))
	mustCurl(t, w.client, fmt.Sprintf("http://%s:8080/", w.reviews.Addr), "reviews from h2")
	waitCount(t, saAgent, 1, 5*time.Second, "route=waypoint", fmt.Sprintf("dst=%s:8080", w.reviews.Addr), "response_flags=-")
	if after := countLines(nsAgent.Log(), "route=waypoint", fmt.Sprintf("dst=%s:8080", w.reviews.Addr)); after != before {
		t.Errorf("the namespace waypoint still carried the workload target after the service-account waypoint came")
	}

	// "mixed" has no waypoint of its own; its endpoints are reviews (whose
	// own waypoint is sa-wp) and ratings (opted out). Service traffic never
	// takes a workload's waypoint (ztunnel): both are reached directly.
	mixed := m.serviceVIP("mixed")
	fromClient := []string{"direction=inbound", "route=hbone", "src_identity=spiffe://cluster.local/ns/default/sa/client"}
	saBefore := countLines(saAgent.Log(), "route=waypoint", fmt.Sprintf("dst=%s:8080", w.reviews.Addr))
	reviewsBefore := countLines(reviewsAgent.Log(), fromClient...)
	bodies := map[string]int{}
	for range 30 {
		out, err := curl(w.client, fmt.Sprintf("http://%s:9080/", mixed))
		if err != nil {
			t.Fatalf("curl mixed: %v", err)
		}
		bodies[strings.TrimSpace(out)]++
	}
	if bodies["reviews from h2"] == 0 || bodies["ratings from h3"] == 0 {
		t.Fatalf("mixed service did not reach both endpoints: %v", bodies)
	}
	waitCount(t, reviewsAgent, reviewsBefore+bodies["reviews from h2"], 5*time.Second, fromClient...)
	waitCount(t, w.agents["h3"], bodies["ratings from h3"], 5*time.Second, fromClient...)
	if n := countLines(saAgent.Log(), "route=waypoint", fmt.Sprintf("dst=%s:8080", w.reviews.Addr)); n != saBefore {
		t.Errorf("service traffic to mixed crossed reviews' workload waypoint %d times", n-saBefore)
	}

	// Policy enforcement (the default): a host outside the mesh calling
	// reviews directly reaches it directly; policy decides.
	saHairpins := countLines(saAgent.Log(), "route=waypoint", fmt.Sprintf("src=%s:", w.reviews.Addr))
	mustCurl(t, w.outside, fmt.Sprintf("http://%s:8080/", w.reviews.Addr), "reviews from h2")
	waitCount(t, reviewsAgent, 1, 5*time.Second, "direction=inbound_plaintext", "route=plaintext", fmt.Sprintf("src=%s:", w.outside.Addr))
	if n := countLines(saAgent.Log(), "route=waypoint", fmt.Sprintf("src=%s:", w.reviews.Addr)); n != saHairpins {
		t.Errorf("under policy enforcement the call crossed the waypoint")
	}

	// Hairpin, opt-in (a new identity: a restart): the same call is sent
	// through reviews' waypoint, which sees the host's hairpin identity from
	// reviews' host, never reviews' own identity nor the client's address.
	if err := reviewsAgent.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, exited := reviewsAgent.Wait(10 * time.Second); !exited {
		t.Fatal("reviews' agent did not stop")
	}
	w.start(t, w.reviews, w.reviewsConfig("sa-wp", hairpinOn))
	reviewsAgent = w.agents["h2"]
	waitMesh(t, reviewsAgent, 30*time.Second, "waypoints known after the restart", func(m meshDump) bool { return len(m.Waypoints) == 2 })
	mustCurl(t, w.outside, fmt.Sprintf("http://%s:8080/", w.reviews.Addr), "reviews from h2")
	waitCount(t, reviewsAgent, 1, 5*time.Second, "direction=inbound_plaintext", "route=hairpin", fmt.Sprintf("src=%s:", w.outside.Addr), "response_flags=-")
	waitCount(t, saAgent, 1, 5*time.Second, "route=waypoint", fmt.Sprintf("src=%s:", w.reviews.Addr), fmt.Sprintf("dst=%s:8080", w.reviews.Addr),
		"src_identity=spiffe://cluster.local/ns/default/sa/hairpin", "response_flags=-")
	if n := countLines(saAgent.Log(), "route=waypoint", "src_identity=spiffe://cluster.local/ns/default/sa/reviews"); n != 0 {
		t.Errorf("the waypoint saw reviews' own identity %d times: a hairpin must never present the destination's", n)
	}

	// The node authorizes first: with hairpin on, a STRICT PeerAuthentication
	// on reviews denies the plaintext caller before any waypoint sees it.
	reviewsPolicies := filepath.Join(w.reviews.Dir, "policies")
	if err := os.MkdirAll(reviewsPolicies, 0o755); err != nil {
		t.Fatal(err)
	}
	loads := countLines(reviewsAgent.Log(), "policies loaded")
	if err := os.WriteFile(filepath.Join(reviewsPolicies, "strict.yaml"), []byte(strictMTLS), 0o644); err != nil {
		t.Fatal(err)
	}
	waitCount(t, reviewsAgent, loads+1, 10*time.Second, "policies loaded")
	saHairpins = countLines(saAgent.Log(), "route=waypoint", fmt.Sprintf("src=%s:", w.reviews.Addr))
	if out, err := curl(w.outside, fmt.Sprintf("http://%s:8080/", w.reviews.Addr)); err == nil {
		t.Errorf("a plaintext caller went through STRICT mTLS by the hairpin: %q", out)
	}
	waitCount(t, reviewsAgent, 1, 5*time.Second, "direction=inbound_plaintext", "route=hairpin", fmt.Sprintf("src=%s:", w.outside.Addr), "response_flags=DENY")
	if n := countLines(saAgent.Log(), "route=waypoint", fmt.Sprintf("src=%s:", w.reviews.Addr)); n != saHairpins {
		t.Errorf("a caller STRICT mTLS denies reached the waypoint")
	}
	// HBONE callers are not plaintext: STRICT lets the waypoint's tunnel in.
	mustCurl(t, w.client, fmt.Sprintf("http://%s:8080/", w.reviews.Addr), "reviews from h2")
	// The waypoint authorizes with the caller's identity: a policy attached
	// to it (targetRefs) denies the client, and only at the waypoint.
	if err := os.MkdirAll(saPolicies, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(saPolicies, "deny-client.yaml"), []byte(denyClientAtWaypoint), 0o644); err != nil {
		t.Fatal(err)
	}
	// The policy itself loaded, not a reload that caught the file half-written.
	saAgent.WaitLog(t, "waypoint_policies=1", 10*time.Second)
	if out, err := curl(w.client, fmt.Sprintf("http://%s:8080/", w.reviews.Addr)); err == nil {
		t.Errorf("the client went through a waypoint whose policy denies it: %q", out)
	}
	waitCount(t, saAgent, 1, 5*time.Second, "route=waypoint", "src_identity=spiffe://cluster.local/ns/default/sa/client", "response_flags=DENY")
	// ratings has no waypoint: the policy of sa-wp does not apply there.
	mustCurl(t, w.client, fmt.Sprintf("http://%s:8080/", w.ratings.Addr), "ratings from h3")
}
