// Command loadgen is the benchmarks' traffic tool, run inside a lab host's
// network namespace (`ip netns exec`). Every mode prints one JSON object.
//
//	loadgen serve -listen :7000                    echo server (the application under the mesh)
//	loadgen probe -target IP:PORT                  one 64-byte exchange: is the path up?
//	loadgen rr    -target IP:PORT -rate 1000 -conns 16 -size 1024 -duration 10s
//	                                               fixed-rate request/response on warm connections: latency percentiles
//	loadgen conn  -target IP:PORT -workers 16 -duration 5s
//	                                               new connections per second (connect, one small exchange, close)
//	loadgen hold  -target IP:PORT -n 1000          open n connections, one exchange each, then hold them until killed
//	loadgen survive -target IP:PORT -n 50 -rate 20 checked traffic across what is done to the path meanwhile
//	                                               (tests/lab/traffic): n idle connections, a byte-exact stream,
//	                                               rate new connections a second and one client back to back;
//	                                               SIGUSR1 starts the next phase, SIGTERM ends and reports (text)
//	loadgen http-serve -listen :7080 -size 1024    HTTP/1.1 server: every request answered with size bytes
//	loadgen http  -target IP:PORT -rate 1000 -conns 16 -size 1024 -duration 10s
//	                                               HTTP/1.1 POSTs of size bytes on conns kept-alive connections:
//	                                               at a fixed rate, latency percentiles; with -rate 0, as fast
//	                                               as the connections go (requests/s)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab/traffic"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen serve|probe|rr|conn|hold [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	listen := fs.String("listen", ":7000", "serve: listen address")
	target := fs.String("target", "", "the echo server's ip:port")
	rate := fs.Float64("rate", 1000, "rr: requests per second, all connections together")
	conns := fs.Int("conns", 16, "rr: connections")
	size := fs.Int("size", 1024, "rr: request and response size in bytes")
	duration := fs.Duration("duration", 5*time.Second, "rr, conn: measured time")
	warmup := fs.Duration("warmup", 500*time.Millisecond, "rr, conn: unmeasured time before")
	workers := fs.Int("workers", 16, "conn: concurrent connect loops")
	n := fs.Int("n", 1000, "hold: connections to open")
	_ = fs.Parse(os.Args[2:])
	raiseFileLimit()

	var (
		out any
		err error
	)
	switch os.Args[1] {
	case "serve":
		err = serve(*listen)
	case "probe":
		err = exchange(*target, 64, 5*time.Second)
		out = map[string]bool{"ok": err == nil}
	case "rr":
		out, err = requestResponse(*target, *rate, *conns, *size, *warmup, *duration)
	case "conn":
		out, err = connRate(*target, *workers, *warmup, *duration)
	case "hold":
		err = hold(*target, *n)
	case "survive":
		err = survive(*target, *n, *rate)
	case "http-serve":
		err = httpServe(*listen, *size)
	case "http":
		out, err = httpLoad(*target, *rate, *conns, *size, *warmup, *duration)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	if out != nil {
		_ = json.NewEncoder(os.Stdout).Encode(out)
	}
}

// raiseFileLimit allows thousands of held connections (root may raise the hard limit).
func raiseFileLimit() {
	want := syscall.Rlimit{Cur: 65536, Max: 65536}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) == nil {
		return
	}
	var cur syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur) == nil {
		cur.Cur = cur.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &cur)
	}
}

func serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// exchange connects, sends size bytes, reads them back and closes.
func exchange(target string, size int, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", target, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	return roundTrip(c, make([]byte, size), make([]byte, size))
}

func roundTrip(c net.Conn, req, resp []byte) error {
	if _, err := c.Write(req); err != nil {
		return err
	}
	_, err := io.ReadFull(c, resp)
	return err
}

// RR is the result of a fixed-rate request/response run.
type RR struct {
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	Rate     float64 `json:"rate"` // achieved, per second
	P50      float64 `json:"p50_ms"`
	P90      float64 `json:"p90_ms"`
	P99      float64 `json:"p99_ms"`
	P999     float64 `json:"p999_ms"`
	Max      float64 `json:"max_ms"`
}

// requestResponse paces each of conns connections at rate/conns, staggered,
// and times each exchange from the write to the last byte of the response.
func requestResponse(target string, rate float64, conns, size int, warmup, duration time.Duration) (*RR, error) {
	cs := make([]net.Conn, conns)
	for i := range cs {
		c, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		if err := roundTrip(c, make([]byte, size), make([]byte, size)); err != nil {
			return nil, fmt.Errorf("warm-up exchange: %w", err)
		}
		cs[i] = c
	}
	interval := time.Duration(float64(time.Second) * float64(conns) / rate)
	start := time.Now().Add(10 * time.Millisecond)
	measureFrom, end := start.Add(warmup), start.Add(warmup+duration)
	var (
		mu      sync.Mutex
		samples []time.Duration
		errs    int
		wg      sync.WaitGroup
	)
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := make([]byte, size), make([]byte, size)
			local := make([]time.Duration, 0, int(duration/interval)+1)
			next := start.Add(interval * time.Duration(i) / time.Duration(conns))
			failed := 0
			for ; next.Before(end); next = next.Add(interval) {
				time.Sleep(time.Until(next))
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				t0 := time.Now()
				if err := roundTrip(c, req, resp); err != nil {
					failed++
					break
				}
				if t0.After(measureFrom) {
					local = append(local, time.Since(t0))
				}
			}
			mu.Lock()
			samples = append(samples, local...)
			errs += failed
			mu.Unlock()
		}()
	}
	wg.Wait()
	return summarize(samples, errs, duration)
}

// summarize is the RR of a run's timed exchanges.
func summarize(samples []time.Duration, errs int, duration time.Duration) (*RR, error) {
	if len(samples) == 0 {
		return nil, fmt.Errorf("no request completed (%d errors)", errs)
	}
	slices.Sort(samples)
	q := func(p float64) float64 {
		return float64(samples[min(len(samples)-1, int(p*float64(len(samples))))]) / 1e6
	}
	return &RR{Requests: len(samples), Errors: errs, Rate: float64(len(samples)) / duration.Seconds(),
		P50: q(0.50), P90: q(0.90), P99: q(0.99), P999: q(0.999), Max: q(1)}, nil
}

// ConnRate is the result of a connection-rate run.
type ConnRate struct {
	Connections int     `json:"connections"`
	Errors      int     `json:"errors"`
	PerSecond   float64 `json:"per_second"`
}

func connRate(target string, workers int, warmup, duration time.Duration) (*ConnRate, error) {
	var ok, failed atomic.Int64
	start := time.Now()
	measureFrom, end := start.Add(warmup), start.Add(warmup+duration)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				now := time.Now()
				if !now.Before(end) {
					return
				}
				err := exchange(target, 64, 5*time.Second)
				if now.Before(measureFrom) {
					continue
				}
				if err != nil {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if ok.Load() == 0 {
		return nil, fmt.Errorf("no connection completed (%d errors)", failed.Load())
	}
	return &ConnRate{Connections: int(ok.Load()), Errors: int(failed.Load()),
		PerSecond: float64(ok.Load()) / duration.Seconds()}, nil
}

// hold opens n connections (64 at a time), makes one exchange on each so that
// the whole path is set up, prints {"open": n} and holds them until killed.
func hold(target string, n int) error {
	conns := make([]net.Conn, n)
	sem := make(chan struct{}, 64)
	var (
		wg       sync.WaitGroup
		firstErr atomic.Pointer[error]
	)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", target, 10*time.Second)
			if err == nil {
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				err = roundTrip(c, make([]byte, 64), make([]byte, 64))
				_ = c.SetDeadline(time.Time{})
			}
			if err != nil {
				firstErr.CompareAndSwap(nil, &err)
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return fmt.Errorf("hold: %w", *p)
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string]int{"open": n})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// survive runs checked traffic to target until SIGTERM, then prints what it saw: the phases' connections, and a
// line starting "FAIL" for each failure. Every failure also makes it exit 1.
func survive(target string, idle int, rate float64) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	dial := func() (net.Conn, error) { return net.DialTimeout("tcp", target, 5*time.Second) }
	held, err := traffic.Hold(dial, idle)
	if err != nil {
		return err
	}
	defer held.Close()
	stream, err := traffic.StartStream(dial)
	if err != nil {
		return err
	}
	loop := traffic.StartLoop(dial, time.Duration(float64(time.Second)/rate))
	fmt.Println("running")
	for phase := 1; ; phase++ {
		if sig := <-sigs; sig != syscall.SIGUSR1 {
			break
		}
		loop.Mark(fmt.Sprintf("phase %d", phase))
	}
	loop.Stop()
	echoed := stream.Stop()
	r := loop.Report()
	fmt.Println(r)
	failed := len(r.Failures)
	for _, f := range r.Failures {
		fmt.Println("FAIL", f)
	}
	for _, e := range held.Check() {
		fmt.Println("FAIL", e)
		failed++
	}
	if err := stream.Err(); err != nil {
		fmt.Println("FAIL stream:", err)
		failed++
	}
	fmt.Printf("stream: %d bytes echoed byte-exact\nidle: %d connections\n", echoed, idle)
	if failed > 0 {
		return fmt.Errorf("%d failures", failed)
	}
	return nil
}
