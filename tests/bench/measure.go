package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// iperf runs iperf3 over p with streams parallel connections and returns the received rate in Gbit/s.
func (tp *topology) iperf(p path, streams int, pl plan) (float64, error) {
	args := []string{"-c", tp.server[p].Addr.String(), "-p", strconv.Itoa(iperfPort), "-J",
		"-t", strconv.Itoa(pl.iperfSeconds), "-P", strconv.Itoa(streams)}
	if pl.iperfOmit > 0 {
		args = append(args, "-O", strconv.Itoa(pl.iperfOmit))
	}
	out, err := output(tp.client[p], time.Duration(pl.iperfSeconds+pl.iperfOmit+20)*time.Second, "iperf3", args...)
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		if err == nil {
			err = jerr
		}
		return 0, fmt.Errorf("iperf3 %s: %w", p, err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3 %s: %s", p, r.Error)
	}
	if err != nil {
		return 0, err
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

// rrResult is loadgen rr's output.
type rrResult struct {
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	Rate     float64 `json:"rate"`
	P50      float64 `json:"p50_ms"`
	P90      float64 `json:"p90_ms"`
	P99      float64 `json:"p99_ms"`
}

// latency runs fixed-rate request/response over p. For a path with agents it also returns the CPU both agents
// used (vCPU per 1000 requests/s); for a tunnel, its processes' counts per request.
func (tp *topology) latency(p path, pl plan) (Percentiles, PerAgent, PerProcess, error) {
	var before [2]float64
	agents, withAgents := tp.agents[p]
	if withAgents {
		for i, a := range agents {
			before[i] = cpuSeconds(a.Pid())
		}
	}
	countsBefore, counted := tp.countsNow(p)
	start := time.Now()
	out, err := tp.loadgen(p, pl.rrDuration+pl.warmup+30*time.Second, "rr", "-rate", fmt.Sprint(pl.rate),
		"-conns", strconv.Itoa(pl.conns), "-size", "1024", "-duration", pl.rrDuration.String(), "-warmup", pl.warmup.String())
	elapsed := time.Since(start).Seconds()
	var counts PerProcess
	if counted {
		// Per request: the requests sent during the whole run, warm-up included, at the fixed rate.
		counts = tp.countsSince(p, countsBefore, pl.rate*elapsed)
	}
	var cpu PerAgent
	if withAgents {
		// Per 1000 req/s: CPU seconds / elapsed seconds / (rate / 1000). The elapsed time includes loadgen's
		// connection set-up and warm-up, spent at the same rate, so the ratio holds.
		per := func(i int) float64 { return (cpuSeconds(agents[i].Pid()) - before[i]) / elapsed / (pl.rate / 1000) }
		cpu = PerAgent{Client: per(0), Server: per(1)}
	}
	if err != nil {
		return Percentiles{}, cpu, counts, err
	}
	var r rrResult
	if err := json.Unmarshal(out, &r); err != nil {
		return Percentiles{}, cpu, counts, fmt.Errorf("loadgen rr %s: %w: %s", p, err, out)
	}
	if r.Errors > 0 || r.Rate < 0.8*pl.rate { // well behind the schedule: the machine could not keep up
		return Percentiles{}, cpu, counts, fmt.Errorf("loadgen rr %s: %d errors, %.0f req/s of %.0f", p, r.Errors, r.Rate, pl.rate)
	}
	return Percentiles{P50: r.P50, P90: r.P90, P99: r.P99}, cpu, counts, nil
}

// connRate runs the connection-rate loop over p and returns connections per second, and for a tunnel its
// processes' counts per connection.
func (tp *topology) connRate(p path, pl plan) (float64, PerProcess, error) {
	countsBefore, counted := tp.countsNow(p)
	out, err := tp.loadgen(p, pl.connDuration+pl.warmup+30*time.Second, "conn", "-workers", strconv.Itoa(pl.workers),
		"-duration", pl.connDuration.String(), "-warmup", pl.warmup.String())
	if err != nil {
		return 0, PerProcess{}, err
	}
	var r struct {
		Connections int     `json:"connections"`
		Errors      int     `json:"errors"`
		PerSecond   float64 `json:"per_second"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, PerProcess{}, fmt.Errorf("loadgen conn %s: %w: %s", p, err, out)
	}
	if r.Errors > r.Connections/100 {
		return 0, PerProcess{}, fmt.Errorf("loadgen conn %s: %d errors for %d connections", p, r.Errors, r.Connections)
	}
	var counts PerProcess
	if counted {
		// Per connection: those of the warm-up too, made at the measured rate.
		counts = tp.countsSince(p, countsBefore, r.PerSecond*(pl.connDuration+pl.warmup).Seconds())
	}
	return r.PerSecond, counts, nil
}

// memory measures both agents of p idle, then holding 1,000 and 10,000 connections through them.
func (tp *topology) memory(t lab.T, p path, pl plan) RSS {
	t.Helper()
	var r RSS
	r.IdleMB = tp.rss(p)
	r.Heap.IdleMB, r.Stack.IdleMB = tp.heap(t, p)
	var held []*lab.Proc
	total := 0
	for i, n := range []int{1000, 10000} {
		h := tp.client[p].Start(fmt.Sprintf("hold-%d", n), tp.bins.loadgen, "hold",
			"-target", fmt.Sprintf("%s:%d", tp.server[p].Addr, echoPort), "-n", strconv.Itoa(n-total))
		held = append(held, h)
		total = n
		waitFor(t, h, `"open"`, 120*time.Second)
		time.Sleep(pl.settle) // let the agents finish setting up and the runtime settle
		if i == 0 {
			r.Conns1kMB = tp.rss(p)
			r.Heap.Conns1kMB, r.Stack.Conns1kMB = tp.heap(t, p)
		} else {
			r.Conns10kMB = tp.rss(p)
			r.Heap.Conns10kMB, r.Stack.Conns10kMB = tp.heap(t, p)
		}
		if pl.profileDir != "" {
			tp.saveProfile(t, p, pl.profileDir, fmt.Sprintf("heap-%dconns", n), "/debug/pprof/heap?gc=1", 10*time.Second)
		}
	}
	for _, h := range held {
		h.Kill()
	}
	perConn := func(at1k, at10k PerAgent) PerAgent {
		return PerAgent{Client: (at10k.Client - at1k.Client) * 1024 / 9000, Server: (at10k.Server - at1k.Server) * 1024 / 9000}
	}
	r.PerConnKB = perConn(r.Conns1kMB, r.Conns10kMB)
	r.Heap.PerConnKB = perConn(r.Heap.Conns1kMB, r.Heap.Conns10kMB)
	r.Stack.PerConnKB = perConn(r.Stack.Conns1kMB, r.Stack.Conns10kMB)
	tp.waitIdle(t, p)
	return r
}

// waitIdle waits until the held connections are gone from p's client host: the application's and the agent's
// ends (the pooled HBONE connections stay, as they should).
func (tp *topology) waitIdle(t lab.T, p path) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	filter := fmt.Sprintf("( dport = :%d or sport = :15001 )", echoPort)
	for time.Now().Before(deadline) {
		out, err := tp.client[p].Run(lab.Timeout(10*time.Second), "ss", "-Htn", filter)
		if err == nil && strings.Count(out, "\n") < 50 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("warning: connections still open 30 s after the hold ended")
}

func waitFor(t lab.T, p *lab.Proc, s string, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if strings.Contains(p.Log(), s) {
			return
		}
		if p.Exited() {
			t.Fatalf("%s exited: %s", p.Label, p.Log())
		}
	}
	t.Fatalf("%s: no %q after %s: %s", p.Label, s, d, p.Log())
}

// rss is the VmRSS of p's agents in MB.
func (tp *topology) rss(p path) PerAgent {
	a := tp.agents[p]
	return PerAgent{Client: vmRSS(a[0].Pid()), Server: vmRSS(a[1].Pid())}
}

// heap is the Go HeapInuse and StackInuse of p's agents in MB after a garbage collection (from the admin API's
// heap profile).
func (tp *topology) heap(t lab.T, p path) (heap, stack PerAgent) {
	t.Helper()
	var mb, st [2]float64
	for i, a := range tp.agents[p] {
		resp, err := a.ControlClient(20 * time.Second).Get("http://localhost/debug/pprof/heap?debug=1&gc=1")
		if err != nil {
			t.Fatalf("heap of the agent on %s: %v", a.Host.Name, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("heap of the agent on %s: %v", a.Host.Name, err)
		}
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
				b, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				mb[i] = b / (1 << 20)
			}
			if v, ok := strings.CutPrefix(line, "# Stack = "); ok { // "inuse / sys"
				f := strings.Fields(v)
				b, _ := strconv.ParseFloat(f[0], 64)
				st[i] = b / (1 << 20)
			}
		}
	}
	return PerAgent{Client: mb[0], Server: mb[1]}, PerAgent{Client: st[0], Server: st[1]}
}

func vmRSS(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// cpuSeconds is utime+stime of pid.
func cpuSeconds(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	// The command name (field 2) may hold spaces; the fields after its closing parenthesis start at field 3.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// saveProfile fetches an admin pprof path from both agents of p into dir as <name>-client.pprof and
// <name>-server.pprof (with a "-compare" suffix for the compared agent).
func (tp *topology) saveProfile(t lab.T, p path, dir, name, urlPath string, timeout time.Duration) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for i, role := range []string{"client", "server"} {
		go func() {
			resp, err := tp.agents[p][i].ControlClient(timeout).Get("http://localhost" + urlPath)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			suffix := ""
			if p == compare {
				suffix = "-compare"
			}
			f, err := os.Create(filepath.Join(dir, name+"-"+role+suffix+".pprof"))
			if err == nil {
				_, err = io.Copy(f, resp.Body)
				f.Close()
			}
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Logf("warning: profile %s: %v", name, err)
		}
	}
}

// trace records execution traces (runtime/trace) of both agents for seconds while load runs on p: what wakes
// which goroutine, and which thread runs it (go tool trace).
func (tp *topology) trace(t lab.T, p path, dir, name string, seconds int, load func() error) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(time.Second) // past the load's warm-up
		tp.saveProfile(t, p, dir, name, fmt.Sprintf("/debug/pprof/trace?seconds=%d", seconds), time.Duration(seconds+15)*time.Second)
	}()
	if err := load(); err != nil {
		t.Logf("warning: load under trace %s: %v", name, err)
	}
	<-done
}

// profile records CPU profiles of both agents of p while load runs on p.
func (tp *topology) profile(t lab.T, p path, dir, name string, seconds int, load func() error) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tp.saveProfile(t, p, dir, name, fmt.Sprintf("/debug/pprof/profile?seconds=%d", seconds), time.Duration(seconds+15)*time.Second)
	}()
	time.Sleep(200 * time.Millisecond)
	if err := load(); err != nil {
		t.Logf("warning: load under profile %s: %v", name, err)
	}
	<-done
}
