// Command scaletable reads the output of the scale harness's benchmarks (go test -bench Scale, build tag
// scaleharness) on its standard input, passes it through, and prints the table of docs/scale.md after it.
package main

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// line matches "BenchmarkScaleX/n=1000-2  20  123 ns/op  4.5 cpu-ms/op ..." (mesh sizes),
// "BenchmarkScalePoolSpread/members=50-2 ..." (pool sizes) and "BenchmarkScalePoolChurn/members=200/per_s=5-2 ..."
// (pool sizes and rates of change, kept as benchmark "ScalePoolChurn/per_s=5").
var line = regexp.MustCompile(`^Benchmark(Scale\w+)/(?:n|members)=(\d+)(/per_s=\d+)?(?:-\d+)?\s+\d+\s+(.*)$`)

// poolBench and churnBench are the benchmarks whose sizes are a gossip pool's members, printed in tables of their
// own.
const (
	poolBench  = "ScalePoolSpread"
	churnBench = "ScalePoolChurn"
)

// results holds benchmark -> mesh size -> unit -> value.
type results map[string]map[int]map[string]float64

func main() {
	res, err := parse(io.TeeReader(os.Stdin, os.Stdout))
	if err != nil {
		fmt.Fprintln(os.Stderr, "scaletable:", err)
		os.Exit(1)
	}
	if len(res) == 0 {
		fmt.Fprintln(os.Stderr, "scaletable: no scale benchmark results in the input")
		os.Exit(1)
	}
	pool := res[poolBench]
	delete(res, poolBench)
	churn := map[int]map[int]map[string]float64{} // rate -> members -> unit -> value
	for name, byN := range res {
		if rate, ok := strings.CutPrefix(name, churnBench+"/per_s="); ok {
			r, _ := strconv.Atoi(rate)
			churn[r] = byN
			delete(res, name)
		}
	}
	if len(res) > 0 {
		fmt.Print("\n" + table(res))
	}
	if len(pool) > 0 {
		fmt.Print("\n" + poolTable(pool))
	}
	if len(churn) > 0 {
		fmt.Print("\n" + churnTable(churn))
	}
}

// churnTable prints, per pool size and rate of changes, the share of deliveries the gossip left to requests, and
// when members used the changes.
func churnTable(churn map[int]map[int]map[string]float64) string {
	var b strings.Builder
	b.WriteString("| members | changes a second (pool-wide) | not delivered by gossip within the repair delay: measured (requests) / model | used after (model): median / 99th percentile |\n")
	b.WriteString("|---|---|---|---|\n")
	for _, n := range sizesOf(churn) {
		for _, rate := range slices.Sorted(maps.Keys(churn)) {
			m, ok := churn[rate][n]
			if !ok {
				continue
			}
			measured := "-"
			if v, ok := m["pulled"]; ok {
				measured = fmt.Sprintf("%.0f%%", 100*v)
			}
			fmt.Fprintf(&b, "| %s | %d | %s / %.1f%% | %.2f s / %.2f s |\n", group(n), rate, measured, 100*m["pulled-model"],
				m["s-p50-model"], m["s-p99-model"])
		}
	}
	return b.String()
}

// poolTable prints how long one change takes to reach a pool's members, measured and as the model estimates it.
func poolTable(pool map[int]map[string]float64) string {
	var b strings.Builder
	b.WriteString("| members | record in one broadcast: median / last member, measured | model | record in two fragments: median / last member, measured | model | members the gossip misses per change, left to the repair (model: one broadcast / two fragments) | requests for records while the changes spread (measured) |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, n := range slices.Sorted(maps.Keys(pool)) {
		m := pool[n]
		cell := func(suffix string) string {
			p50, ok1 := m["s-p50-"+suffix]
			all, ok2 := m["s-all-"+suffix]
			if !ok1 || !ok2 {
				return "-"
			}
			return fmt.Sprintf("%.2f s / %.2f s", p50, all)
		}
		requests := "-"
		if v, ok := m["requests"]; ok {
			requests = strconv.FormatFloat(v, 'f', 0, 64)
		}
		missed := fmt.Sprintf("%.3f / %.3f", m["missed-small-model"], m["missed-large-model"])
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", group(n), cell("small"), cell("small-model"), cell("large"),
			cell("large-model"), missed, requests)
	}
	return b.String()
}

func parse(r io.Reader) (results, error) {
	res := results{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := line.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		m[1] += m[3]
		f := strings.Fields(m[4])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("benchmark %s: value %q: %w", m[1], f[i], err)
			}
			if res[m[1]] == nil {
				res[m[1]] = map[int]map[string]float64{}
			}
			if res[m[1]][n] == nil {
				res[m[1]][n] = map[string]float64{}
			}
			res[m[1]][n][f[i+1]] = v
		}
	}
	return res, sc.Err()
}

// sizesOf lists the sizes any benchmark of res has results for, in order.
func sizesOf[K comparable](res map[K]map[int]map[string]float64) []int {
	var sizes []int
	for _, byN := range res {
		for n := range byN {
			if !slices.Contains(sizes, n) {
				sizes = append(sizes, n)
			}
		}
	}
	slices.Sort(sizes)
	return sizes
}

// changesPerSecond is the churn of the table's second row: 1,000 hosts each changing once a minute.
const changesPerSecond = 1000.0 / 60

func table(res results) string {
	sizes := sizesOf(res)
	var b strings.Builder
	b.WriteString("| cost |")
	for _, n := range sizes {
		fmt.Fprintf(&b, " %s workloads |", group(n))
	}
	b.WriteString("\n|---|")
	for range sizes {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	row := func(name string, cell func(n int) string) {
		fmt.Fprintf(&b, "| %s |", name)
		for _, n := range sizes {
			fmt.Fprintf(&b, " %s |", cell(n))
		}
		b.WriteString("\n")
	}
	get := func(bench string, n int, unit string) (float64, bool) {
		v, ok := res[bench][n][unit]
		return v, ok
	}
	// cost is a cell of a change's CPU and allocated bytes.
	cost := func(bench string) func(n int) string {
		return func(n int) string {
			cpu, ok := get(bench, n, "cpu-ms/op")
			alloc, _ := get(bench, n, "B/op")
			if !ok {
				return "-"
			}
			return fmt.Sprintf("%s ms; %.1f MB", ms(cpu), alloc/1e6)
		}
	}
	row("one changed gossip record (a health flip), whole update path (CPU; allocated)", cost("ScaleGossipUpdate"))
	row("1,000 hosts each flipping a health once a minute (CPU demand)", func(n int) string {
		cpu, ok := get("ScaleGossipUpdate", n, "cpu-ms/op")
		if !ok {
			return "-"
		}
		core := cpu * changesPerSecond / 1000
		if core >= 1 {
			return fmt.Sprintf("%.2f cores: saturated", core)
		}
		return fmt.Sprintf("%.3f core", core)
	})
	row("one changed gossip record that moves a workload (a claim: full build; CPU; allocated)", cost("ScaleGossipStructural"))
	row("istiod delta of one workload, end to end (CPU; allocated)", cost("ScaleIstiodDelta"))
	row("per-connection lookups: source fallback / hairpin check / route to a VIP", func(n int) string {
		s, ok1 := get("ScaleSourceFallback", n, "ns/op")
		h, ok2 := get("ScaleHairpinCheck", n, "ns/op")
		r, ok3 := get("ScaleRoute", n, "ns/op")
		if !ok1 || !ok2 || !ok3 {
			return "-"
		}
		return fmt.Sprintf("%s / %s / %s", us(s), us(h), us(r))
	})
	row("policy decision among 10,003 policies: warm, 1,024 destinations / caches cold (mean; against the same among 23 policies)", func(n int) string {
		w, ok1 := get("ScalePolicy", n, "ns/op")
		c, ok2 := get("ScalePolicyCold", n, "ns/op")
		base, ok3 := get("ScalePolicyColdBaseline", n, "ns/op")
		if !ok1 || !ok2 || !ok3 {
			return "-"
		}
		return fmt.Sprintf("%s / %s (among 23: %s; ×%.1f)", us(w), us(c), us(base), c/base)
	})
	row("heap per remote workload", func(n int) string {
		v, ok := get("ScaleMemory", n, "B/workload")
		if !ok {
			return "-"
		}
		return fmt.Sprintf("%.1f KB", v/1000)
	})
	return b.String()
}

func group(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func ms(v float64) string {
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

func us(ns float64) string {
	if ns < 1000 {
		return fmt.Sprintf("%.0f ns", ns)
	}
	return fmt.Sprintf("%.1f us", ns/1000)
}
