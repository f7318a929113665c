package hbone

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// benchWrite is the size of each write the sender makes (what io.Copy between sockets would do with a
// 64 KiB buffer).
const benchWrite = 64 << 10

// BenchmarkThroughput measures single-stream throughput on loopback, in one run, of plain TCP, plain TLS 1.3
// (the same certificates and ciphers as HBONE) and an HBONE tunnel through an in-process client -> server ->
// target, and prints hbone's ratios to both plus its allocations per MiB (both ends of the tunnel counted).
//
//	go test -run='^$' -bench=Throughput -benchtime=3s ./agent/internal/hbone
func BenchmarkThroughput(b *testing.B) {
	rates := map[string]float64{}
	allocs := map[string]float64{}
	for _, mode := range []string{"tcp", "tls", "hbone"} {
		b.Run(mode, func(b *testing.B) {
			conn, sink, cleanup := benchPath(b, mode)
			defer cleanup()
			buf := make([]byte, benchWrite)
			b.SetBytes(benchWrite)
			b.ReportAllocs()
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if _, err := conn.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			total := int64(b.N) * benchWrite
			sink.waitFor(b, total)
			elapsed := time.Since(start)
			b.StopTimer()
			runtime.ReadMemStats(&ms1)
			rate := float64(total) * 8 / elapsed.Seconds() / 1e9
			rates[mode] = rate
			b.ReportMetric(rate, "Gbit/s")
			allocs[mode] = float64(ms1.Mallocs-ms0.Mallocs) / (float64(total) / (1 << 20))
			b.ReportMetric(allocs[mode], "allocs/MiB")
		})
	}
	if rates["tls"] > 0 && rates["tcp"] > 0 {
		// Printed rather than logged so that it shows without -v.
		fmt.Printf("throughput: tcp %.2f Gbit/s, tls %.2f Gbit/s, hbone %.2f Gbit/s; hbone/tls %.0f%%, hbone/tcp %.0f%%, tls/tcp %.0f%%\n",
			rates["tcp"], rates["tls"], rates["hbone"],
			100*rates["hbone"]/rates["tls"], 100*rates["hbone"]/rates["tcp"], 100*rates["tls"]/rates["tcp"])
		fmt.Printf("allocations per MiB carried (all goroutines): tcp %.2f, tls %.2f, hbone %.2f\n",
			allocs["tcp"], allocs["tls"], allocs["hbone"])
	}
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
		st, err := h.pool.Dial(ctx, h.dst, ConnectRequest{Authority: sinkAddr.String()})
		if err != nil {
			b.Fatal(err)
		}
		return st, sink, func() { _ = st.Close() }
	}
}
