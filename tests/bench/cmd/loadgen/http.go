package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// httpServe answers every request, after reading its body, with size bytes.
func httpServe(addr string, size int) error {
	body := bytes.Repeat([]byte("x"), size)
	return (&http.Server{Addr: addr, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(body)
	})}).ListenAndServe()
}

// httpLoad sends POSTs of size bytes to target on conns kept-alive HTTP/1.1 connections, each paced at
// rate/conns (staggered), timing each from the request to the last byte of the answer; rate 0 sends back to
// back. Like rr, a connection stops at its first error.
func httpLoad(target string, rate float64, conns, size int, warmup, duration time.Duration) (*RR, error) {
	tr := &http.Transport{MaxConnsPerHost: conns, MaxIdleConnsPerHost: conns, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	url := "http://" + target + "/bench"
	body := bytes.Repeat([]byte("y"), size)
	do := func() error {
		resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != http.StatusOK || n != int64(size)) {
			err = fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
		}
		return err
	}
	for range conns { // warm: every connection made before the clock starts
		if err := do(); err != nil {
			return nil, fmt.Errorf("warm-up request: %w", err)
		}
	}
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(conns) / rate)
	}
	start := time.Now().Add(10 * time.Millisecond)
	measureFrom, end := start.Add(warmup), start.Add(warmup+duration)
	var (
		mu      sync.Mutex
		samples []time.Duration
		errs    int
		wg      sync.WaitGroup
	)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			next := start
			if interval > 0 {
				next = start.Add(interval * time.Duration(i) / time.Duration(conns))
			}
			failed := 0
			for next.Before(end) {
				time.Sleep(time.Until(next))
				t0 := time.Now()
				if err := do(); err != nil {
					failed++
					break
				}
				if t0.After(measureFrom) {
					local = append(local, time.Since(t0))
				}
				if interval > 0 {
					next = next.Add(interval)
				} else {
					next = time.Now()
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
