package hbone

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// benchWrite is the size of each write the sender makes (what io.Copy between sockets would do with a
// 64 KiB buffer); benchRound is what one measurement carries.
const (
	benchWrite = 64 << 10
	benchRound = 32 << 20
)

var benchModes = []string{"tcp", "tls", "hbone"}

// BenchmarkThroughput measures single-stream throughput on loopback of plain TCP, plain TLS 1.3 (the same
// certificates and ciphers as HBONE) and an HBONE tunnel through an in-process client -> server -> target, all
// in one run, and prints hbone's ratios to the other two and the allocations per MiB of each path (every
// goroutine counted, so hbone's include both ends of the tunnel).
//
// Each iteration is one round: 32 MiB through each path, back to back. Ratios are the median of the per-round
// ratios, so that load from other processes on a shared machine, which drifts over seconds, cancels out.
//
//	go test -run='^$' -bench='^BenchmarkThroughput$' -benchtime=20x ./agent/internal/hbone
func BenchmarkThroughput(b *testing.B) {
	type path struct {
		conn    net.Conn
		sink    *byteSink
		cleanup func()
		rates   []float64
		mallocs uint64
	}
	paths := map[string]*path{}
	for _, m := range benchModes {
		conn, sink, cleanup := benchPath(b, m)
		paths[m] = &path{conn: conn, sink: sink, cleanup: cleanup}
	}
	defer func() {
		for _, p := range paths {
			p.cleanup()
		}
	}()
	buf := make([]byte, benchWrite)
	b.SetBytes(benchRound * int64(len(benchModes)))
	b.ResetTimer()
	for range b.N {
		for _, m := range benchModes {
			p := paths[m]
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			start := time.Now()
			for sent := 0; sent < benchRound; sent += benchWrite {
				if _, err := p.conn.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			p.sink.waitFor(b, benchRound)
			p.rates = append(p.rates, benchRound*8/time.Since(start).Seconds()/1e9)
			runtime.ReadMemStats(&ms1)
			p.mallocs += ms1.Mallocs - ms0.Mallocs
		}
	}
	b.StopTimer()

	ratio := func(a, c string) float64 {
		r := make([]float64, b.N)
		for i := range r {
			r[i] = paths[a].rates[i] / paths[c].rates[i]
		}
		return median(r)
	}
	mib := float64(b.N) * benchRound / (1 << 20)
	for _, m := range benchModes {
		b.ReportMetric(median(paths[m].rates), m+"-Gbit/s")
	}
	hbTLS, hbTCP, tlsTCP := ratio("hbone", "tls"), ratio("hbone", "tcp"), ratio("tls", "tcp")
	b.ReportMetric(hbTLS, "hbone/tls")
	b.ReportMetric(float64(paths["hbone"].mallocs)/mib, "hbone-allocs/MiB")
	// Printed rather than logged so that it shows without -v.
	fmt.Printf("throughput (median of %d rounds of 32 MiB): tcp %.2f Gbit/s, tls %.2f Gbit/s, hbone %.2f Gbit/s\n",
		b.N, median(paths["tcp"].rates), median(paths["tls"].rates), median(paths["hbone"].rates))
	fmt.Printf("ratios (median per round): hbone/tls %.0f%%, hbone/tcp %.0f%%, tls/tcp %.0f%%\n", 100*hbTLS, 100*hbTCP, 100*tlsTCP)
	fmt.Printf("allocations per MiB carried (all goroutines): tcp %.2f, tls %.2f, hbone %.2f\n",
		float64(paths["tcp"].mallocs)/mib, float64(paths["tls"].mallocs)/mib, float64(paths["hbone"].mallocs)/mib)
}

// BenchmarkThroughputPath measures one path at a time (for profiling one of them, e.g. with -cpuprofile).
func BenchmarkThroughputPath(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(mode, func(b *testing.B) {
			conn, sink, cleanup := benchPath(b, mode)
			defer cleanup()
			buf := make([]byte, benchWrite)
			b.SetBytes(benchWrite)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := conn.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			sink.waitFor(b, int64(b.N)*benchWrite)
		})
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// byteSink counts what it receives on its connections.
type byteSink struct {
	mu    sync.Mutex
	cond  sync.Cond
	total int64
}

func newByteSink() *byteSink {
	s := &byteSink{}
	s.cond.L = &s.mu
	return s
}

func (s *byteSink) drain(r io.Reader) {
	buf := make([]byte, benchWrite)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			s.mu.Lock()
			s.total += int64(n)
			s.cond.Broadcast()
			s.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

func (s *byteSink) waitFor(b *testing.B, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.total < n {
		s.cond.Wait()
	}
	s.total -= n
}

// benchPath returns a sending connection for mode and the sink at the far end.
func benchPath(b *testing.B, mode string) (net.Conn, *byteSink, func()) {
	sink := newByteSink()
	var wg sync.WaitGroup
	sinkAddr := tcpServer(b, func(c *net.TCPConn) { sink.drain(c) })
	switch mode {
	case "tcp":
		c, err := net.Dial("tcp", sinkAddr.String())
		if err != nil {
			b.Fatal(err)
		}
		return c, sink, func() { _ = c.Close() }
	case "tls":
		ca := newTestCA(b)
		ln := listenLoopback(b)
		scfg := ca.serverTLS(ca.leaf(b, serverID))
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(c, scfg)
			sink.drain(tc)
			_ = tc.Close()
		}()
		c, err := tls.Dial("tcp", ln.Addr().String(), ca.clientTLS(ca.leaf(b, clientID), serverID))
		if err != nil {
			b.Fatal(err)
		}
		return c, sink, func() { _ = c.Close(); _ = ln.Close(); wg.Wait() }
	default:
		h := newHarness(b, harnessOpts{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := h.pool.Dial(ctx, h.dst.with(request{Authority: sinkAddr.String()}))
		if err != nil {
			b.Fatal(err)
		}
		return st, sink, func() { _ = st.Close() }
	}
}
