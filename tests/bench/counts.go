package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Counts are what a process did, as the kernel and the Go runtime count it: read and write system calls
// (/proc/PID/io syscr and syscw), context switches, voluntary (it waited) and involuntary (it was preempted), summed
// over its threads, and Go heap allocations (the agents only: from their admin API). A shared machine's noise
// moves how long a request takes; it hardly moves these.
type Counts struct {
	Reads       float64 `json:"reads"`
	Writes      float64 `json:"writes"`
	Voluntary   float64 `json:"voluntary_switches"`
	Involuntary float64 `json:"involuntary_switches"`
	Allocs      float64 `json:"allocs,omitempty"`
}

// PerProcess is one Counts for each end of a path: the client side's process and the server side's.
type PerProcess struct {
	Client Counts `json:"client"`
	Server Counts `json:"server"`
}

// CountsResult is what each tunnel's processes did per 1 KiB request/response on warm connections (the latency
// runs) and per new connection (the connection-rate runs): medians over rounds.
type CountsResult struct {
	PerRequest    map[string]PerProcess `json:"per_request"`
	PerConnection map[string]PerProcess `json:"per_connection"`
}

func (c Counts) minus(o Counts) Counts {
	return Counts{Reads: c.Reads - o.Reads, Writes: c.Writes - o.Writes, Voluntary: c.Voluntary - o.Voluntary,
		Involuntary: c.Involuntary - o.Involuntary, Allocs: c.Allocs - o.Allocs}
}

func (c Counts) per(n float64) Counts {
	if n <= 0 {
		return Counts{}
	}
	return Counts{Reads: c.Reads / n, Writes: c.Writes / n, Voluntary: c.Voluntary / n, Involuntary: c.Involuntary / n,
		Allocs: c.Allocs / n}
}

// countsOf reads pid's counts; mallocs gives its Go allocations, when known.
func countsOf(pid int, mallocs func() float64) Counts {
	var c Counts
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			switch k {
			case "syscr":
				c.Reads = n
			case "syscw":
				c.Writes = n
			}
		}
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			switch k {
			case "voluntary_ctxt_switches":
				c.Voluntary += n
			case "nonvoluntary_ctxt_switches":
				c.Involuntary += n
			}
		}
	}
	if mallocs != nil {
		c.Allocs = mallocs()
	}
	return c
}

// processes are the pids of p's two tunnel ends, and how to read their allocations (nil for the peer's).
func (tp *topology) processes(p path) (pids [2]int, mallocs [2]func() float64, ok bool) {
	if a, isAgent := tp.agents[p]; isAgent {
		for i, x := range a {
			pids[i] = x.Pid()
			mallocs[i] = func() float64 {
				resp, err := x.ControlClient(10 * time.Second).Get("http://localhost/debug/pprof/heap?debug=1")
				if err != nil {
					return 0
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				for _, line := range strings.Split(string(body), "\n") {
					if v, found := strings.CutPrefix(line, "# Mallocs = "); found {
						n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
						return n
					}
				}
				return 0
			}
		}
		return pids, mallocs, true
	}
	if p == peer && tp.tunnel[peer] != nil && tp.peerServer != nil {
		return [2]int{tp.tunnel[peer].Pid(), tp.peerServer.Pid()}, mallocs, true
	}
	return pids, mallocs, false
}

// countsNow snapshots p's processes.
func (tp *topology) countsNow(p path) (PerProcess, bool) {
	pids, mallocs, ok := tp.processes(p)
	if !ok {
		return PerProcess{}, false
	}
	return PerProcess{Client: countsOf(pids[0], mallocs[0]), Server: countsOf(pids[1], mallocs[1])}, true
}

// countsSince is what p's processes did since before, per unit of work (n of them).
func (tp *topology) countsSince(p path, before PerProcess, n float64) PerProcess {
	now, _ := tp.countsNow(p)
	return PerProcess{Client: now.Client.minus(before.Client).per(n), Server: now.Server.minus(before.Server).per(n)}
}

func medianCounts(xs []Counts) Counts {
	pick := func(f func(Counts) float64) float64 {
		v := make([]float64, len(xs))
		for i, x := range xs {
			v[i] = f(x)
		}
		return median(v)
	}
	return Counts{
		Reads:       pick(func(c Counts) float64 { return c.Reads }),
		Writes:      pick(func(c Counts) float64 { return c.Writes }),
		Voluntary:   pick(func(c Counts) float64 { return c.Voluntary }),
		Involuntary: pick(func(c Counts) float64 { return c.Involuntary }),
		Allocs:      pick(func(c Counts) float64 { return c.Allocs }),
	}
}

func medianPerProcess(xs []PerProcess) PerProcess {
	var c, s []Counts
	for _, x := range xs {
		c, s = append(c, x.Client), append(s, x.Server)
	}
	return PerProcess{Client: medianCounts(c), Server: medianCounts(s)}
}

// printCounts writes the counts as a table: one row per tunnel and end.
func (r *Result) printCounts(w io.Writer) {
	if len(r.Counts.PerRequest) == 0 {
		return
	}
	tw := &table{}
	tw.row("counts", "reads", "writes", "switches (vol+invol)", "allocs")
	rows := func(what string, m map[string]PerProcess) {
		for _, name := range []string{"meshed", "compare", "peer"} {
			pp, ok := m[name]
			if !ok {
				continue
			}
			for _, end := range []struct {
				side string
				c    Counts
			}{{"client", pp.Client}, {"server", pp.Server}} {
				allocs := ""
				if end.c.Allocs > 0 {
					allocs = f1(end.c.Allocs)
				}
				tw.row(fmt.Sprintf("%s, %s %s", what, name, end.side), f1(end.c.Reads), f1(end.c.Writes),
					fmt.Sprintf("%s+%s", f1(end.c.Voluntary), f1(end.c.Involuntary)), allocs)
			}
		}
	}
	rows("per 1 KiB request", r.Counts.PerRequest)
	rows("per new connection", r.Counts.PerConnection)
	fmt.Fprintln(w)
	tw.write(w)
	fmt.Fprintln(w, "(the agent's process on each side; a relay needs about 2 reads and 2 writes per agent per exchange)")
}

func f1(x float64) string { return fmt.Sprintf("%.1f", x) }
