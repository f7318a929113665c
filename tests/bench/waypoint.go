package bench

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// WaypointResult is 1 KiB HTTP/1.1 requests through a waypoint, served at L7 (the service's port 80, declared
// http) and relayed at L4 (its port 81, not declared: the same service, backend, client and connections), in the
// same rounds: what the waypoint's L7 costs over its L4.
type WaypointResult struct {
	// Max is requests/s with every connection sending back to back; Fixed the latency at a fixed rate.
	L4 WaypointPath `json:"l4"`
	L7 WaypointPath `json:"l7"`
	// MaxRatio is L7/L4 requests/s; Added is what L7 adds to L4's latency percentiles.
	MaxRatio float64     `json:"max_ratio"`
	Added    Percentiles `json:"added_ms"`
	Rate     float64     `json:"rate"`
	Conns    int         `json:"conns"`
}

// WaypointPath is one port's figures (medians of the rounds).
type WaypointPath struct {
	MaxRPS  float64     `json:"max_rps"`
	Latency Percentiles `json:"latency_ms"`
	// CPU is the waypoint agent's vCPU per 1000 requests/s at the fixed rate.
	CPU float64 `json:"waypoint_cpu_per_1k_rps"`
}

const waypointHTTPPort = 7080

// measureWaypoint sets up client -> waypoint -> server on a lab of its own and measures both ports, alternating
// which goes first from round to round.
func measureWaypoint(t lab.T, bins binaries, pl plan) *WaypointResult {
	t.Helper()
	l := lab.New(t, 3)
	c, w, s := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	for _, h := range l.Hosts {
		tuneHost(t, h)
		h.DefaultRoute()
	}
	s.Start("http", bins.loadgen, "http-serve", "-listen", fmt.Sprintf(":%d", waypointHTTPPort), "-size", "1024")
	s.WaitListening(waypointHTTPPort, 10*time.Second)
	c.Issue(bins.agent, "default", "client")
	w.Issue(bins.agent, "default", "wp")
	s.Issue(bins.agent, "default", "web")
	key := filepath.Join(l.Hosts[0].Dir, "..", "gossip.key")
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(h *lab.Host, body string) *lab.Agent {
		a := h.StartAgent(bins.agent, lab.AgentConfig{Host: h, Gossip: &lab.Gossip{KeyFile: key, Seed: c}, Tables: body}.String())
		a.WaitReady(t, 20*time.Second)
		return a
	}
	clientAgent := start(c, fmt.Sprintf("[[workload]]\nname = \"client\"\nservice_account = \"client\"\naddresses = [%q]\n", c.Addr))
	wpAgent := start(w, fmt.Sprintf("[waypoint]\nenabled = true\nname = \"wp\"\nservice_account = \"wp\"\naddresses = [%q]\n", w.Addr))
	start(s, fmt.Sprintf(`[[workload]]
name = "web"
service_account = "web"
addresses = [%q]
[[service]]
name = "web"
use_waypoint = "wp"
ports = [{ port = 80, target_port = %d, app_protocol = "http" }, { port = 81, target_port = %d }]
workloads = ["web"]
`, s.Addr, waypointHTTPPort, waypointHTTPPort))
	vip := waypointVIP(t, clientAgent, true)
	waypointVIP(t, wpAgent, false) // the waypoint must know the service too
	load := func(port int, args ...string) (loadResult, error) {
		out, err := output(c, pl.rrDuration+pl.warmup+30*time.Second, bins.loadgen,
			append([]string{"http", "-target", fmt.Sprintf("%s:%d", vip, port), "-conns", fmt.Sprint(pl.conns), "-size", "1024",
				"-duration", pl.rrDuration.String(), "-warmup", pl.warmup.String()}, args...)...)
		var r loadResult
		if err == nil {
			err = json.Unmarshal(out, &r)
		}
		if err == nil && r.Errors > 0 {
			err = fmt.Errorf("%d errors", r.Errors)
		}
		return r, err
	}
	// Both ports work, and each is what it says: port 80 through the waypoint's HTTP server, 81 relayed.
	for _, port := range []int{80, 81} {
		if _, err := output(c, 20*time.Second, "curl", "-sS", "-o", "/dev/null", "--max-time", "10", fmt.Sprintf("http://%s:%d/", vip, port)); err != nil {
			t.Fatalf("waypoint path, port %d: %v", port, err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) { // logged as each closes
		log := wpAgent.Log()
		if strings.Contains(log, "route=waypoint_http") && strings.Contains(log, fmt.Sprintf("dst=%s:81 route=waypoint ", vip)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the waypoint did not serve port 80 at L7 and relay port 81:\n%s", log)
		}
	}

	var max4, max7, cpu4, cpu7 []float64
	var lat4, lat7 []Percentiles
	for r := range pl.rounds {
		ports := []int{81, 80}
		if r%2 == 1 {
			ports = []int{80, 81}
		}
		for _, port := range ports {
			m, err := load(port, "-rate", "0")
			if err != nil {
				t.Fatalf("waypoint port %d, back to back: %v", port, err)
			}
			before, t0 := cpuSeconds(wpAgent.Pid()), time.Now()
			f, err := load(port, "-rate", fmt.Sprint(pl.rate))
			if err != nil {
				t.Fatalf("waypoint port %d, %.0f req/s: %v", port, pl.rate, err)
			}
			cpu := (cpuSeconds(wpAgent.Pid()) - before) / time.Since(t0).Seconds() / (pl.rate / 1000)
			p := Percentiles{P50: f.P50, P90: f.P90, P99: f.P99}
			if port == 80 {
				max7, lat7, cpu7 = append(max7, m.Rate), append(lat7, p), append(cpu7, cpu)
			} else {
				max4, lat4, cpu4 = append(max4, m.Rate), append(lat4, p), append(cpu4, cpu)
			}
		}
	}
	if pl.profileDir != "" {
		for port, name := range map[int]string{80: "waypoint-l7", 81: "waypoint-l4"} {
			done := make(chan struct{})
			go func() {
				defer close(done)
				profileTo(t, wpAgent, pl.profileDir, name, "/debug/pprof/profile?seconds=5", 20*time.Second)
			}()
			time.Sleep(200 * time.Millisecond)
			if _, err := load(port, "-rate", fmt.Sprint(pl.rate)); err != nil {
				t.Logf("warning: load under profile %s: %v", name, err)
			}
			<-done
		}
	}
	res := &WaypointResult{Rate: pl.rate, Conns: pl.conns,
		L4: WaypointPath{MaxRPS: median(max4), Latency: medianPercentiles(lat4), CPU: median(cpu4)},
		L7: WaypointPath{MaxRPS: median(max7), Latency: medianPercentiles(lat7), CPU: median(cpu7)}}
	res.MaxRatio = res.L7.MaxRPS / res.L4.MaxRPS
	res.Added = Percentiles{P50: res.L7.Latency.P50 - res.L4.Latency.P50, P90: res.L7.Latency.P90 - res.L4.Latency.P90,
		P99: res.L7.Latency.P99 - res.L4.Latency.P99}
	return res
}

// loadResult is loadgen http's output.
type loadResult struct {
	Errors int     `json:"errors"`
	Rate   float64 `json:"rate"`
	P50    float64 `json:"p50_ms"`
	P90    float64 `json:"p90_ms"`
	P99    float64 `json:"p99_ms"`
}

// waypointVIP waits until agent a knows service web (and its waypoint, with bound), and returns its VIP.
func waypointVIP(t lab.T, a *lab.Agent, bound bool) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		body, err := a.Admin("/config_dump")
		var d struct {
			Services []struct {
				Name      string   `json:"name"`
				Addresses []string `json:"addresses"`
				Waypoint  string   `json:"waypoint"`
			} `json:"services"`
		}
		if err == nil && json.Unmarshal([]byte(body), &d) == nil {
			for _, s := range d.Services {
				if s.Name == "web" && len(s.Addresses) > 0 && (s.Waypoint != "" || !bound) {
					return s.Addresses[0]
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never learned service web (and its waypoint): %v %s", a.Host.Name, err, body)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// RunWaypoint builds the binaries and measures the waypoint alone (bench -waypoint-only).
func RunWaypoint(t lab.T, o Options) *WaypointResult {
	t.Helper()
	lab.Require(t, "nft", "curl")
	bins, err := build(t.TempDir(), o.Agent, "")
	if err != nil {
		t.Fatal(err)
	}
	return measureWaypoint(t, bins, newPlan(o))
}

// Print writes the waypoint's figures.
func (r *WaypointResult) Print(w io.Writer) {
	fmt.Fprintf(w, "waypoint (1 KiB HTTP/1.1 requests, %d kept-alive connections; the same service at L4 and at L7):\n", r.Conns)
	fmt.Fprintf(w, "  back to back: L4 %.0f req/s, L7 %.0f req/s (L7/L4 %.2f)\n", r.L4.MaxRPS, r.L7.MaxRPS, r.MaxRatio)
	fmt.Fprintf(w, "  at %.0f req/s p50/p90/p99: L4 %.3f/%.3f/%.3f ms, L7 %.3f/%.3f/%.3f ms (added +%.3f/+%.3f/+%.3f)\n", r.Rate,
		r.L4.Latency.P50, r.L4.Latency.P90, r.L4.Latency.P99, r.L7.Latency.P50, r.L7.Latency.P90, r.L7.Latency.P99,
		r.Added.P50, r.Added.P90, r.Added.P99)
	fmt.Fprintf(w, "  waypoint agent CPU per 1k req/s: L4 %.3f, L7 %.3f vCPU\n", r.L4.CPU, r.L7.CPU)
}

// profileTo saves what agent a serves at urlPath (a pprof profile) as dir/name.pprof.
func profileTo(t lab.T, a *lab.Agent, dir, name, urlPath string, timeout time.Duration) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	resp, err := a.ControlClient(timeout).Get("http://localhost" + urlPath)
	if err != nil {
		t.Logf("warning: profile %s: %v", name, err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(filepath.Join(dir, name+".pprof"))
	if err == nil {
		_, err = io.Copy(f, resp.Body)
		f.Close()
	}
	if err != nil {
		t.Logf("warning: profile %s: %v", name, err)
	}
}
