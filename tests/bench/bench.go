package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// Options of a run.
type Options struct {
	Quick  bool // the smoke run: one short round (under a minute)
	Rounds int  // 0: 1 quick, 5 full
	// Agent is a prebuilt ambient-agent binary; empty builds the working tree.
	Agent string
	// Compare, when set, is a second prebuilt agent measured on its own pair of hosts in the same rounds, back
	// to back with the first (a before/after comparison that the machine's load drift does not blur).
	Compare string
	// ProfileDir, when set, receives CPU profiles of both agents under extra throughput and latency runs, and
	// heap profiles with 1,000 and 10,000 open connections (go tool pprof -top FILE).
	ProfileDir string
	// Progress, when set, is told what the run is doing.
	Progress func(format string, args ...any)
}

// plan is what a run does, from the Options.
type plan struct {
	rounds                  int
	iperfSeconds, iperfOmit int
	rate                    float64 // latency: requests/s
	conns, workers          int
	warmup                  time.Duration
	rrDuration              time.Duration
	connDuration            time.Duration
	settle                  time.Duration
	profileDir              string
}

func newPlan(o Options) plan {
	p := plan{rounds: 5, iperfSeconds: 4, iperfOmit: 1, rate: 1000, conns: 16, workers: 16,
		warmup: 500 * time.Millisecond, rrDuration: 8 * time.Second, connDuration: 4 * time.Second,
		settle: 2 * time.Second, profileDir: o.ProfileDir}
	if o.Quick {
		p = plan{rounds: 1, iperfSeconds: 2, rate: 1000, conns: 16, workers: 16,
			warmup: 300 * time.Millisecond, rrDuration: 2 * time.Second, connDuration: 2 * time.Second,
			settle: 500 * time.Millisecond, profileDir: o.ProfileDir}
	}
	if o.Rounds > 0 {
		p.rounds = o.Rounds
	}
	return p
}

// samples collects every round's measurements, per path.
type samples struct {
	tp1, tp8 map[path][]float64
	lat      map[path][]Percentiles
	conn     map[path][]float64
	cpu      map[path][]PerAgent
	// perRequest and perConn are the tunnel processes' counts, per request and per new connection.
	perRequest, perConn map[path][]PerProcess
}

// Run builds the binaries, sets up the lab and measures. It fails t on any error: a benchmark that cannot
// measure something says so instead of reporting a zero.
func Run(t lab.T, o Options) *Result {
	t.Helper()
	progress := o.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	pl := newPlan(o)
	start := time.Now()
	res := &Result{Mode: "full", Rounds: pl.rounds, Started: start.UTC().Format(time.RFC3339), Machine: machine()}
	if o.Quick {
		res.Mode = "quick"
	}
	res.Machine.AgentCommit = commit()
	if o.Agent != "" {
		res.Machine.AgentCommit = "prebuilt " + o.Agent
	}

	progress("building the agent, loadgen and the Istio HBONE peer")
	lab.Require(t, "iperf3", "nft", "ss", "stunnel4")
	bins, err := build(t.TempDir(), o.Agent, o.Compare)
	if err != nil {
		t.Fatal(err)
	}
	progress("setting up the lab: direct h1->h2, meshed h3->h4, istio peer h5->h6, stunnel h7->h8%s",
		map[bool]string{true: ", compared agent h9->h10"}[o.Compare != ""])
	tp := setUp(t, bins)

	progress("memory: agents idle, then holding 1,000 and 10,000 meshed connections")
	res.RSS = tp.memory(t, meshed, pl)
	var cmpRSS RSS
	if o.Compare != "" {
		cmpRSS = tp.memory(t, compare, pl)
	}

	s := samples{tp1: map[path][]float64{}, tp8: map[path][]float64{}, lat: map[path][]Percentiles{},
		conn: map[path][]float64{}, cpu: map[path][]PerAgent{},
		perRequest: map[path][]PerProcess{}, perConn: map[path][]PerProcess{}}
	for r := range pl.rounds {
		// Rotate the order of the paths so that no path always runs first (or right after another).
		order := rotate(tp.paths, r)
		progress("round %d/%d: throughput (1 and 8 streams), latency, connection rate; order %v", r+1, pl.rounds, order)
		for _, streams := range []int{1, 8} {
			for _, p := range order {
				g, err := tp.iperf(p, streams, pl)
				if err != nil {
					t.Fatal(err)
				}
				if streams == 1 {
					s.tp1[p] = append(s.tp1[p], g)
				} else {
					s.tp8[p] = append(s.tp8[p], g)
				}
			}
		}
		for _, p := range order {
			if p == stunnel {
				continue // a throughput baseline only
			}
			lat, cpu, counts, err := tp.latency(p, pl)
			if err != nil {
				t.Fatal(err)
			}
			s.lat[p] = append(s.lat[p], lat)
			if _, _, ok := tp.processes(p); ok {
				s.perRequest[p] = append(s.perRequest[p], counts)
			}
			if _, ok := tp.agents[p]; ok {
				s.cpu[p] = append(s.cpu[p], cpu)
			}
		}
		for _, p := range order {
			if p == peer || p == stunnel {
				continue // compared on throughput (and the peer on latency) only
			}
			c, counts, err := tp.connRate(p, pl)
			if err != nil {
				t.Fatal(err)
			}
			s.conn[p] = append(s.conn[p], c)
			if _, _, ok := tp.processes(p); ok {
				s.perConn[p] = append(s.perConn[p], counts)
			}
		}
	}
	if pl.profileDir != "" {
		progress("profiling the agents under throughput and latency load into %s", pl.profileDir)
		for p := range tp.agents {
			tp.profileAll(t, p, pl)
		}
	}
	progress("waypoint: 1 KiB HTTP requests through a waypoint, at L4 (port 81) and at L7 (port 80), on a lab of its own")
	res.Waypoint = measureWaypoint(t, bins, pl)
	s.summarize(res, pl)
	if o.Compare != "" {
		res.Compare = s.compared(o.Compare, cmpRSS, pl.rate)
	}
	res.Machine.LoadAfter = loadAverage()
	res.Seconds = time.Since(start).Seconds()
	return res
}

// profileAll records CPU profiles of p's agents under one extra run of each kind of load.
func (tp *topology) profileAll(t lab.T, p path, pl plan) {
	t.Helper()
	secs := max(pl.iperfSeconds, 5)
	prof := pl
	prof.iperfSeconds, prof.iperfOmit = secs, 0
	prof.rrDuration = time.Duration(secs) * time.Second
	prof.connDuration = time.Duration(secs) * time.Second
	tp.profile(t, p, pl.profileDir, "cpu-throughput1", secs, func() error { _, err := tp.iperf(p, 1, prof); return err })
	tp.profile(t, p, pl.profileDir, "cpu-throughput8", secs, func() error { _, err := tp.iperf(p, 8, prof); return err })
	tp.profile(t, p, pl.profileDir, "cpu-latency", secs, func() error { _, _, _, err := tp.latency(p, prof); return err })
	tp.profile(t, p, pl.profileDir, "cpu-connrate", secs, func() error { _, _, err := tp.connRate(p, prof); return err })
	tp.trace(t, p, pl.profileDir, "trace-latency", 2, func() error { _, _, _, err := tp.latency(p, prof); return err })
}

func (s *samples) summarize(res *Result, pl plan) {
	tput := func(streams int, x map[path][]float64) (Throughput, PeerThroughput, Baseline) {
		return Throughput{Streams: streams, Direct: median(x[direct]), Meshed: median(x[meshed]),
				Ratio: median(ratios(x[meshed], x[direct])), DirectRuns: x[direct], MeshedRuns: x[meshed]},
			PeerThroughput{Gbps: median(x[peer]), RatioToDirect: median(ratios(x[peer], x[direct])),
				AgentOverPeer: median(ratios(x[meshed], x[peer])), Runs: x[peer]},
			Baseline{Gbps: median(x[stunnel]), RatioToDirect: median(ratios(x[stunnel], x[direct])),
				AgentOverBaseline: median(ratios(x[meshed], x[stunnel])), Runs: x[stunnel]}
	}
	res.Throughput1, res.Peer.Throughput1, res.TLSBaseline.Throughput1 = tput(1, s.tp1)
	res.Throughput8, res.Peer.Throughput8, res.TLSBaseline.Throughput8 = tput(8, s.tp8)
	res.TLSBaseline.Implementation = "stunnel4 (OpenSSL), TLS 1.3, mutual, same certificates, no HTTP/2"
	res.Latency = Latency{Rate: pl.rate, Conns: pl.conns, Size: 1024,
		Direct: medianPercentiles(s.lat[direct]), Meshed: medianPercentiles(s.lat[meshed]),
		Added: medianPercentiles(diffPercentiles(s.lat[meshed], s.lat[direct]))}
	res.Peer.Latency = PeerLatency{Percentiles: medianPercentiles(s.lat[peer]),
		Added: medianPercentiles(diffPercentiles(s.lat[peer], s.lat[direct]))}
	res.Peer.Implementation = "istio.io/istio/pkg/hbone " + istioVersion()
	res.ConnRate = ConnRate{Workers: pl.workers, Direct: median(s.conn[direct]), Meshed: median(s.conn[meshed]),
		Ratio: median(ratios(s.conn[meshed], s.conn[direct])), DirectRuns: s.conn[direct], MeshedRuns: s.conn[meshed]}
	res.CPU = medianCPU(s.cpu[meshed], pl.rate)
	res.Counts = CountsResult{PerRequest: map[string]PerProcess{}, PerConnection: map[string]PerProcess{}}
	for p, xs := range s.perRequest {
		res.Counts.PerRequest[p.String()] = medianPerProcess(xs)
	}
	for p, xs := range s.perConn {
		res.Counts.PerConnection[p.String()] = medianPerProcess(xs)
	}
}

func medianCPU(xs []PerAgent, rate float64) CPU {
	var c, v []float64
	for _, x := range xs {
		c, v = append(c, x.Client), append(v, x.Server)
	}
	out := CPU{Rate: rate, Client: median(c), Server: median(v)}
	out.Total = out.Client + out.Server
	return out
}

// compared summarizes the compared agent against direct and against the first agent, round by round.
func (s *samples) compared(agent string, rss RSS, rate float64) *Compare {
	tp := func(x map[path][]float64) CompareThroughput {
		return CompareThroughput{Gbps: median(x[compare]), RatioToDirect: median(ratios(x[compare], x[direct])),
			OverAgent: median(ratios(x[compare], x[meshed])), Runs: x[compare]}
	}
	return &Compare{
		Agent:       agent,
		Throughput1: tp(s.tp1),
		Throughput8: tp(s.tp8),
		Latency: PeerLatency{Percentiles: medianPercentiles(s.lat[compare]),
			Added: medianPercentiles(diffPercentiles(s.lat[compare], s.lat[direct]))},
		ConnRate: CompareRate{PerSecond: median(s.conn[compare]), RatioToDirect: median(ratios(s.conn[compare], s.conn[direct])),
			OverAgent: median(ratios(s.conn[compare], s.conn[meshed])), Runs: s.conn[compare]},
		CPU: medianCPU(s.cpu[compare], rate),
		RSS: rss,
	}
}

func rotate[T any](xs []T, n int) []T {
	n %= len(xs)
	return append(append([]T{}, xs[n:]...), xs[:n]...)
}

// WriteJSON writes the result to path.
func (r *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), LoadBefore: loadAverage()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// loadAverage is the 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// istioVersion is the istio.io/istio version the peer module pins.
func istioVersion() string {
	b, err := os.ReadFile(lab.RepoRoot() + "/tests/bench/peer/go.mod")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "istio.io/istio" {
			return f[1]
		}
	}
	return "unknown"
}

// Check reports what is missing or not sane in a result (the smoke test's assertions).
func (r *Result) Check() []string {
	var bad []string
	want := func(ok bool, format string, args ...any) {
		if !ok {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	pos := func(name string, x float64) { want(x > 0 && x < 1e9, "%s = %v, want > 0", name, x) }
	for _, t := range []struct {
		name string
		t    Throughput
		p    PeerThroughput
	}{{"throughput_1", r.Throughput1, r.Peer.Throughput1}, {"throughput_8", r.Throughput8, r.Peer.Throughput8}} {
		pos(t.name+".direct_gbps", t.t.Direct)
		pos(t.name+".meshed_gbps", t.t.Meshed)
		pos(t.name+".ratio", t.t.Ratio)
		want(t.t.Ratio < 1.5, "%s.ratio = %v: the meshed path cannot be faster than direct", t.name, t.t.Ratio)
		pos("peer."+t.name+".gbps", t.p.Gbps)
	}
	for name, p := range map[string]Percentiles{"direct": r.Latency.Direct, "meshed": r.Latency.Meshed, "peer": r.Peer.Latency.Percentiles} {
		pos("latency_1k."+name+".p50_ms", p.P50)
		want(p.P50 <= p.P90 && p.P90 <= p.P99, "latency_1k.%s: percentiles out of order: %+v", name, p)
		want(p.P99 < 1000, "latency_1k.%s.p99_ms = %v: over a second", name, p.P99)
	}
	for _, k := range []struct {
		name string
		m    map[string]PerProcess
		path string
	}{{"per_request", r.Counts.PerRequest, "meshed"}, {"per_request", r.Counts.PerRequest, "peer"}, {"per_connection", r.Counts.PerConnection, "meshed"}} {
		pp, ok := k.m[k.path]
		want(ok, "counts.%s.%s: missing", k.name, k.path)
		for side, c := range map[string]Counts{"client": pp.Client, "server": pp.Server} {
			pos(fmt.Sprintf("counts.%s.%s.%s.reads", k.name, k.path, side), c.Reads)
			pos(fmt.Sprintf("counts.%s.%s.%s.writes", k.name, k.path, side), c.Writes)
			pos(fmt.Sprintf("counts.%s.%s.%s.voluntary_switches", k.name, k.path, side), c.Voluntary)
			want(c.Reads < 1000 && c.Writes < 1000, "counts.%s.%s.%s: %+v per unit: not per request", k.name, k.path, side, c)
		}
		if k.path == "meshed" {
			pos("counts."+k.name+".meshed.client.allocs", pp.Client.Allocs)
		}
	}
	pos("conn_rate.direct_per_s", r.ConnRate.Direct)
	pos("conn_rate.meshed_per_s", r.ConnRate.Meshed)
	pos("cpu_per_1k_rps.total_vcpu", r.CPU.Total)
	want(r.CPU.Total < float64(max(r.Machine.CPUs, 1))*2, "cpu_per_1k_rps.total_vcpu = %v: more than the machine has", r.CPU.Total)
	for name, m := range map[string]PerAgent{"idle_mb": r.RSS.IdleMB, "conns_1000_mb": r.RSS.Conns1kMB, "conns_10000_mb": r.RSS.Conns10kMB} {
		pos("rss."+name+".client", m.Client)
		pos("rss."+name+".server", m.Server)
	}
	want(r.RSS.Conns10kMB.Client >= r.RSS.IdleMB.Client, "rss: the client agent holds 10,000 connections in less memory than idle")
	pos("tls_baseline.throughput_1.gbps", r.TLSBaseline.Throughput1.Gbps)
	want(r.Waypoint != nil, "waypoint: missing")
	if w := r.Waypoint; w != nil {
		for name, p := range map[string]WaypointPath{"l4": w.L4, "l7": w.L7} {
			pos("waypoint."+name+".max_rps", p.MaxRPS)
			pos("waypoint."+name+".latency_ms.p50", p.Latency.P50)
			pos("waypoint."+name+".waypoint_cpu_per_1k_rps", p.CPU)
			want(p.Latency.P50 <= p.Latency.P90 && p.Latency.P90 <= p.Latency.P99, "waypoint.%s: percentiles out of order: %+v", name, p.Latency)
		}
	}
	return bad
}
