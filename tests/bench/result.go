package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// Result is what a run measured; it is written as JSON (the keys of issue 11) and printed as a table.
type Result struct {
	Mode        string     `json:"mode"` // "quick" or "full"
	Rounds      int        `json:"rounds"`
	Started     string     `json:"started"`
	Seconds     float64    `json:"seconds"`
	Machine     Machine    `json:"machine"`
	Throughput1 Throughput `json:"throughput_1"`
	Throughput8 Throughput `json:"throughput_8"`
	Latency     Latency    `json:"latency_1k"`
	ConnRate    ConnRate   `json:"conn_rate"`
	CPU         CPU        `json:"cpu_per_1k_rps"`
	RSS         RSS        `json:"rss"`
	Peer        Peer       `json:"peer"`
	// TLSBaseline is bulk throughput through a plain TLS tunnel in C (stunnel4): what TLS alone costs on this
	// machine, a ceiling for any HBONE implementation here.
	TLSBaseline TLSBaseline `json:"tls_baseline"`
	// Compare is a second agent binary measured in the same rounds (Options.Compare).
	Compare *Compare `json:"compare,omitempty"`
	// Counts are the system calls, context switches and allocations of each tunnel's processes.
	Counts CountsResult `json:"counts"`
	// Waypoint is HTTP through a waypoint, at L7 against L4.
	Waypoint *WaypointResult `json:"waypoint,omitempty"`
}

// TLSBaseline is the stunnel4 path's throughput.
type TLSBaseline struct {
	Implementation string   `json:"implementation"`
	Throughput1    Baseline `json:"throughput_1"`
	Throughput8    Baseline `json:"throughput_8"`
}

// Baseline compares a tunnel with the direct path and with the agent.
type Baseline struct {
	Gbps              float64   `json:"gbps"`
	RatioToDirect     float64   `json:"ratio"`
	AgentOverBaseline float64   `json:"agent_vs_baseline"` // meshed / baseline
	Runs              []float64 `json:"runs"`
}

// Compare is the compared agent's results, as ratios to direct and to the first agent (above 1: better).
type Compare struct {
	Agent       string            `json:"agent"`
	Throughput1 CompareThroughput `json:"throughput_1"`
	Throughput8 CompareThroughput `json:"throughput_8"`
	Latency     PeerLatency       `json:"latency_1k"`
	ConnRate    CompareRate       `json:"conn_rate"`
	CPU         CPU               `json:"cpu_per_1k_rps"`
	RSS         RSS               `json:"rss"`
}

// CompareThroughput is the compared agent's throughput.
type CompareThroughput struct {
	Gbps          float64   `json:"gbps"`
	RatioToDirect float64   `json:"ratio"`
	OverAgent     float64   `json:"vs_agent"` // compared / first agent
	Runs          []float64 `json:"runs"`
}

// CompareRate is the compared agent's connection rate.
type CompareRate struct {
	PerSecond     float64   `json:"per_s"`
	RatioToDirect float64   `json:"ratio"`
	OverAgent     float64   `json:"vs_agent"`
	Runs          []float64 `json:"runs"`
}

// Machine describes where the run happened; the load average says how busy the machine was with others' work.
type Machine struct {
	CPUs        int    `json:"nproc"`
	CPUModel    string `json:"cpu_model"`
	Kernel      string `json:"kernel"`
	Go          string `json:"go"`
	LoadBefore  string `json:"load_average_before"`
	LoadAfter   string `json:"load_average_after"`
	AgentCommit string `json:"agent_commit"`
}

// Throughput is bulk transfer with iperf3 over Streams parallel connections, in Gbit/s.
type Throughput struct {
	Streams    int       `json:"streams"`
	Direct     float64   `json:"direct_gbps"`
	Meshed     float64   `json:"meshed_gbps"`
	Ratio      float64   `json:"ratio"` // meshed / direct, median of the per-round ratios
	DirectRuns []float64 `json:"direct_runs"`
	MeshedRuns []float64 `json:"meshed_runs"`
}

// Percentiles of request/response latency, in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
}

// Latency is fixed-rate 1 KB request/response on warm connections.
type Latency struct {
	Rate   float64     `json:"rate"` // requests per second, all connections together
	Conns  int         `json:"connections"`
	Size   int         `json:"size_bytes"`
	Direct Percentiles `json:"direct"`
	Meshed Percentiles `json:"meshed"`
	Added  Percentiles `json:"added"` // meshed - direct, median of the per-round differences
}

// ConnRate is new connections per second: connect, one 64-byte exchange, close.
type ConnRate struct {
	Workers    int       `json:"workers"`
	Direct     float64   `json:"direct_per_s"`
	Meshed     float64   `json:"meshed_per_s"`
	Ratio      float64   `json:"ratio"`
	DirectRuns []float64 `json:"direct_runs"`
	MeshedRuns []float64 `json:"meshed_runs"`
}

// CPU is the CPU time both agents use per 1000 requests/s of 1 KB (vCPU, i.e. CPU seconds per second), measured
// over the meshed latency runs.
type CPU struct {
	Rate   float64 `json:"rate"`
	Client float64 `json:"client_agent_vcpu"`
	Server float64 `json:"server_agent_vcpu"`
	Total  float64 `json:"total_vcpu"`
}

// PerAgent holds one value for each agent of the meshed pair.
type PerAgent struct {
	Client float64 `json:"client"`
	Server float64 `json:"server"`
}

// RSS is the resident memory of the agents (VmRSS), idle and holding open tunneled connections.
type RSS struct {
	IdleMB     PerAgent `json:"idle_mb"`
	Conns1kMB  PerAgent `json:"conns_1000_mb"`
	Conns10kMB PerAgent `json:"conns_10000_mb"`
	// PerConnKB is the growth from 1,000 to 10,000 open connections, per connection.
	PerConnKB PerAgent `json:"per_conn_kb"`
	// Heap is the Go heap in use after a garbage collection at the same moments. RSS counts only the pages a
	// process has touched: a buffer allocated from fresh memory and barely used counts little in RSS at first,
	// and in full once it is reused (as pooled buffers are in a long-running agent). Heap shows that cost.
	Heap HeapInuse `json:"heap_inuse"`
	// Stack is the Go runtime's StackInuse at the same moments: the goroutines' stacks, outside the heap.
	Stack HeapInuse `json:"stack_inuse"`
}

// HeapInuse is one of the Go runtime's memory figures (HeapInuse, StackInuse) of each agent, in MB, and its
// growth per connection.
type HeapInuse struct {
	IdleMB     PerAgent `json:"idle_mb"`
	Conns1kMB  PerAgent `json:"conns_1000_mb"`
	Conns10kMB PerAgent `json:"conns_10000_mb"`
	PerConnKB  PerAgent `json:"per_conn_kb"`
}

// Peer is the same traffic through Istio's own Go HBONE client and server.
type Peer struct {
	Implementation string         `json:"implementation"`
	Throughput1    PeerThroughput `json:"throughput_1"`
	Throughput8    PeerThroughput `json:"throughput_8"`
	Latency        PeerLatency    `json:"latency_1k"`
}

// PeerThroughput compares the peer with the direct path and with the agent.
type PeerThroughput struct {
	Gbps          float64   `json:"gbps"`
	RatioToDirect float64   `json:"ratio"`         // peer / direct
	AgentOverPeer float64   `json:"agent_vs_peer"` // meshed / peer: above 1, the agent is ahead
	Runs          []float64 `json:"runs"`
}

// PeerLatency is the peer's latency and what it adds over direct.
type PeerLatency struct {
	Percentiles
	Added Percentiles `json:"added"`
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ratios returns a[i]/b[i].
func ratios(a, b []float64) []float64 {
	out := make([]float64, 0, len(a))
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}

func medianPercentiles(ps []Percentiles) Percentiles {
	pick := func(f func(Percentiles) float64) float64 {
		xs := make([]float64, len(ps))
		for i, p := range ps {
			xs[i] = f(p)
		}
		return median(xs)
	}
	return Percentiles{
		P50: pick(func(p Percentiles) float64 { return p.P50 }),
		P90: pick(func(p Percentiles) float64 { return p.P90 }),
		P99: pick(func(p Percentiles) float64 { return p.P99 }),
	}
}

func diffPercentiles(a, b []Percentiles) []Percentiles {
	out := make([]Percentiles, min(len(a), len(b)))
	for i := range out {
		out[i] = Percentiles{P50: a[i].P50 - b[i].P50, P90: a[i].P90 - b[i].P90, P99: a[i].P99 - b[i].P99}
	}
	return out
}

// Print writes the result as a table with the targets.
func (r *Result) Print(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "ambient-agent data path, %s run, %d round(s), medians; %d CPU(s) %s, kernel %s, %s\n",
		r.Mode, r.Rounds, m.CPUs, m.CPUModel, m.Kernel, m.Go)
	fmt.Fprintf(w, "load average before %s, after %s; agent %s; %.0f s\n\n", m.LoadBefore, m.LoadAfter, m.AgentCommit, r.Seconds)
	tw := &table{}
	tw.row("", "direct", "meshed", "meshed/direct", "istio peer", "peer/direct", "target")
	tp := func(name string, t Throughput, p PeerThroughput) {
		tw.row(name+" (Gbit/s)", f2(t.Direct), f2(t.Meshed), f2(t.Ratio), f2(p.Gbps), f2(p.RatioToDirect), "stunnel4 x 1.1")
	}
	tp("throughput_1", r.Throughput1, r.Peer.Throughput1)
	tp("throughput_8", r.Throughput8, r.Peer.Throughput8)
	l, pl := r.Latency, r.Peer.Latency
	for _, q := range []struct {
		name string
		get  func(Percentiles) float64
	}{{"p50", func(p Percentiles) float64 { return p.P50 }}, {"p90", func(p Percentiles) float64 { return p.P90 }},
		{"p99", func(p Percentiles) float64 { return p.P99 }}} {
		target := ""
		if q.name == "p99" {
			target = "added <= 0.300"
		}
		tw.row(fmt.Sprintf("latency_1k %s (ms)", q.name), f3(q.get(l.Direct)), f3(q.get(l.Meshed)),
			"+"+f3(q.get(l.Added)), f3(q.get(pl.Percentiles)), "+"+f3(q.get(pl.Added)), target)
	}
	tw.row("conn_rate (conn/s)", f0(r.ConnRate.Direct), f0(r.ConnRate.Meshed), f2(r.ConnRate.Ratio), "", "", "ratio >= 0.40")
	tw.write(w)
	fmt.Fprintf(w, "\nlatency_1k: %.0f req/s of %d B over %d warm connections; conn_rate: %d concurrent connect loops\n",
		l.Rate, l.Size, l.Conns, r.ConnRate.Workers)
	fmt.Fprintf(w, "cpu_per_1k_rps: %.3f vCPU both agents (client %.3f, server %.3f) at %.0f req/s    target <= 0.12\n",
		r.CPU.Total, r.CPU.Client, r.CPU.Server, r.CPU.Rate)
	fmt.Fprintf(w, "rss (MB, client/server agent): idle %.1f/%.1f, 1,000 conns %.1f/%.1f, 10,000 conns %.1f/%.1f; "+
		"per conn %.1f/%.1f KB    target idle <= 20 MB, <= 10 KB per conn\n",
		r.RSS.IdleMB.Client, r.RSS.IdleMB.Server, r.RSS.Conns1kMB.Client, r.RSS.Conns1kMB.Server,
		r.RSS.Conns10kMB.Client, r.RSS.Conns10kMB.Server, r.RSS.PerConnKB.Client, r.RSS.PerConnKB.Server)
	h := r.RSS.Heap
	fmt.Fprintf(w, "go heap in use (MB, client/server agent): idle %.1f/%.1f, 1,000 conns %.1f/%.1f, 10,000 conns %.1f/%.1f; per conn %.1f/%.1f KB\n",
		h.IdleMB.Client, h.IdleMB.Server, h.Conns1kMB.Client, h.Conns1kMB.Server, h.Conns10kMB.Client, h.Conns10kMB.Server,
		h.PerConnKB.Client, h.PerConnKB.Server)
	st := r.RSS.Stack
	fmt.Fprintf(w, "go stacks in use (MB, client/server agent): idle %.1f/%.1f, 10,000 conns %.1f/%.1f; per conn %.1f/%.1f KB\n",
		st.IdleMB.Client, st.IdleMB.Server, st.Conns10kMB.Client, st.Conns10kMB.Server, st.PerConnKB.Client, st.PerConnKB.Server)
	fmt.Fprintf(w, "peer: %s; agent/peer throughput_1 %.2f, throughput_8 %.2f\n", r.Peer.Implementation,
		r.Peer.Throughput1.AgentOverPeer, r.Peer.Throughput8.AgentOverPeer)
	b := r.TLSBaseline
	fmt.Fprintf(w, "tls baseline (%s): throughput_1 %.2f Gbit/s (%.2f of direct), throughput_8 %.2f Gbit/s (%.2f of direct); agent/baseline %.2f, %.2f    target >= 1.1\n",
		b.Implementation, b.Throughput1.Gbps, b.Throughput1.RatioToDirect, b.Throughput8.Gbps, b.Throughput8.RatioToDirect,
		b.Throughput1.AgentOverBaseline, b.Throughput8.AgentOverBaseline)
	r.printCounts(w)
	if r.Waypoint != nil {
		fmt.Fprintln(w)
		r.Waypoint.Print(w)
	}
	if c := r.Compare; c != nil {
		fmt.Fprintf(w, "\ncompared agent %s, same rounds (ratio to direct; compared/first agent):\n", c.Agent)
		fmt.Fprintf(w, "  throughput_1 %.2f Gbit/s (%.2f; %.2f)  throughput_8 %.2f Gbit/s (%.2f; %.2f)\n",
			c.Throughput1.Gbps, c.Throughput1.RatioToDirect, c.Throughput1.OverAgent,
			c.Throughput8.Gbps, c.Throughput8.RatioToDirect, c.Throughput8.OverAgent)
		fmt.Fprintf(w, "  latency_1k p50/p90/p99 %.3f/%.3f/%.3f ms, added +%.3f/+%.3f/+%.3f\n", c.Latency.P50, c.Latency.P90,
			c.Latency.P99, c.Latency.Added.P50, c.Latency.Added.P90, c.Latency.Added.P99)
		fmt.Fprintf(w, "  conn_rate %.0f/s (%.2f; %.2f)  cpu_per_1k_rps %.3f (client %.3f, server %.3f)\n", c.ConnRate.PerSecond,
			c.ConnRate.RatioToDirect, c.ConnRate.OverAgent, c.CPU.Total, c.CPU.Client, c.CPU.Server)
		fmt.Fprintf(w, "  rss per conn %.1f/%.1f KB, go heap per conn %.1f/%.1f KB, go stacks per conn %.1f/%.1f KB, rss idle %.1f/%.1f MB\n",
			c.RSS.PerConnKB.Client, c.RSS.PerConnKB.Server, c.RSS.Heap.PerConnKB.Client, c.RSS.Heap.PerConnKB.Server,
			c.RSS.Stack.PerConnKB.Client, c.RSS.Stack.PerConnKB.Server,
			c.RSS.IdleMB.Client, c.RSS.IdleMB.Server)
	}
}

// Markdown writes the main table as Markdown (for docs/benchmarks.md).
func (r *Result) Markdown(w io.Writer) {
	fmt.Fprintln(w, "| | direct | meshed | meshed/direct | istio peer | peer/direct | target |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	tp := func(name string, t Throughput, p PeerThroughput) {
		fmt.Fprintf(w, "| %s (Gbit/s) | %s | %s | %s | %s | %s | stunnel4 x 1.1 |\n", name, f2(t.Direct), f2(t.Meshed),
			f2(t.Ratio), f2(p.Gbps), f2(p.RatioToDirect))
	}
	tp("throughput_1", r.Throughput1, r.Peer.Throughput1)
	tp("throughput_8", r.Throughput8, r.Peer.Throughput8)
	l, pl := r.Latency, r.Peer.Latency
	fmt.Fprintf(w, "| latency_1k p50 (ms) | %s | %s | +%s | %s | +%s | |\n", f3(l.Direct.P50), f3(l.Meshed.P50), f3(l.Added.P50), f3(pl.P50), f3(pl.Added.P50))
	fmt.Fprintf(w, "| latency_1k p90 (ms) | %s | %s | +%s | %s | +%s | |\n", f3(l.Direct.P90), f3(l.Meshed.P90), f3(l.Added.P90), f3(pl.P90), f3(pl.Added.P90))
	fmt.Fprintf(w, "| latency_1k p99 (ms) | %s | %s | +%s | %s | +%s | added <= 0.300 |\n", f3(l.Direct.P99), f3(l.Meshed.P99), f3(l.Added.P99), f3(pl.P99), f3(pl.Added.P99))
	fmt.Fprintf(w, "| conn_rate (conn/s) | %s | %s | %s | | | ratio >= 0.40 |\n", f0(r.ConnRate.Direct), f0(r.ConnRate.Meshed), f2(r.ConnRate.Ratio))

	fmt.Fprintf(w, "| cpu_per_1k_rps (vCPU, both agents) | | %.3f | | | | <= 0.12 |\n", r.CPU.Total)
	fmt.Fprintf(w, "| rss idle (MB, client/server) | | %.1f / %.1f | | | | <= 20 |\n", r.RSS.IdleMB.Client, r.RSS.IdleMB.Server)
	fmt.Fprintf(w, "| rss 1,000 conns (MB) | | %.1f / %.1f | | | | |\n", r.RSS.Conns1kMB.Client, r.RSS.Conns1kMB.Server)
	fmt.Fprintf(w, "| rss 10,000 conns (MB) | | %.1f / %.1f | | | | |\n", r.RSS.Conns10kMB.Client, r.RSS.Conns10kMB.Server)
	fmt.Fprintf(w, "| rss per conn (KB) | | %.1f / %.1f | | | | <= 10 |\n", r.RSS.PerConnKB.Client, r.RSS.PerConnKB.Server)
	fmt.Fprintf(w, "| go heap in use per conn (KB) | | %.1f / %.1f | | | | |\n", r.RSS.Heap.PerConnKB.Client, r.RSS.Heap.PerConnKB.Server)
	b := r.TLSBaseline
	fmt.Fprintf(w, "\nTLS baseline (%s): throughput_1 %s Gbit/s (%s of direct), throughput_8 %s Gbit/s (%s of direct).\n",
		b.Implementation, f2(b.Throughput1.Gbps), f2(b.Throughput1.RatioToDirect), f2(b.Throughput8.Gbps), f2(b.Throughput8.RatioToDirect))
}

func f0(x float64) string { return fmt.Sprintf("%.0f", x) }
func f2(x float64) string { return fmt.Sprintf("%.2f", x) }
func f3(x float64) string { return fmt.Sprintf("%.3f", x) }

// table aligns columns: the first left, the others right.
type table struct{ rows [][]string }

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len(c))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			if i == 0 {
				fmt.Fprintf(&b, "%-*s", widths[i], c)
			} else {
				fmt.Fprintf(&b, "  %*s", widths[i], c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}
