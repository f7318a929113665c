// Package traffic is the lab's checked traffic: an echo server, connections
// held idle, a byte-exact stream, and new connections opened at a fixed rate
// and back to back, each checked end to end and timed. The e2e tests run it in
// process; loadgen (tests/bench/cmd/loadgen) runs it inside a machine.
package traffic

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Dialer opens a connection to the echo server, through whatever is tested.
type Dialer func() (net.Conn, error)

// ServeEcho echoes every connection ln accepts, until ln is closed.
func ServeEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// EchoThrough opens a connection, echoes msg on it and closes it.
func EchoThrough(dial Dialer, msg string) error {
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.Close()
	return EchoOnce(c, msg)
}

// EchoOnce writes msg on c and checks that it comes back, within 5 seconds.
func EchoOnce(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echoed %q, want %q", got, msg)
	}
	return nil
}

// Held are connections opened, checked once, then left idle.
type Held struct{ conns []net.Conn }

// Hold opens n connections and echoes once on each.
func Hold(dial Dialer, n int) (*Held, error) {
	h := &Held{}
	for i := range n {
		c, err := dial()
		if err == nil {
			err = EchoOnce(c, fmt.Sprintf("idle %d\n", i))
		}
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("idle connection %d: %w", i, err)
		}
		h.conns = append(h.conns, c)
	}
	return h, nil
}

// Check echoes once more on every connection and returns what failed.
func (h *Held) Check() []error {
	var errs []error
	for i, c := range h.conns {
		if err := EchoOnce(c, fmt.Sprintf("idle %d again\n", i)); err != nil {
			errs = append(errs, fmt.Errorf("idle connection %d: %w", i, err))
		}
	}
	return errs
}

// Close closes every connection.
func (h *Held) Close() {
	for _, c := range h.conns {
		c.Close()
	}
}

// Stream writes a known sequence through one connection and checks every byte
// that comes back.
type Stream struct {
	c       net.Conn
	stopped chan struct{}
	wg      sync.WaitGroup
	echoed  atomic.Int64
	mu      sync.Mutex
	first   error
}

// StartStream opens the connection and starts writing and checking.
func StartStream(dial Dialer) (*Stream, error) {
	c, err := dial()
	if err != nil {
		return nil, err
	}
	s := &Stream{c: c, stopped: make(chan struct{})}
	block := func(i int64) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8), byte(i * 7)}, 1365) }
	var written atomic.Int64
	s.wg.Go(func() {
		defer closeWrite(c)
		for i := int64(0); ; i++ {
			select {
			case <-s.stopped:
				return
			default:
			}
			if _, err := c.Write(block(i)); err != nil {
				s.fail(fmt.Errorf("write block %d: %w", i, err))
				return
			}
			written.Add(1)
			time.Sleep(time.Millisecond)
		}
	})
	s.wg.Go(func() {
		got := make([]byte, len(block(0)))
		for i := int64(0); ; i++ {
			if _, err := io.ReadFull(c, got); err != nil {
				if err == io.EOF && i == written.Load() {
					return
				}
				s.fail(fmt.Errorf("read block %d of %d written: %w", i, written.Load(), err))
				return
			}
			if !bytes.Equal(got, block(i)) {
				s.fail(fmt.Errorf("block %d came back changed", i))
				return
			}
			s.echoed.Add(int64(len(got)))
		}
	})
	return s, nil
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

func (s *Stream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.first == nil {
		s.first = err
	}
}

// Err is the stream's first failure.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}

// Stop ends the stream once everything written has come back, and returns the
// bytes echoed.
func (s *Stream) Stop() int64 {
	close(s.stopped)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.fail(fmt.Errorf("the echo of the last blocks did not come back"))
	}
	s.c.Close()
	return s.echoed.Load()
}

// Loop opens a connection every interval, and one more client connects back to
// back; each echoes once. It records how long each took, per phase.
type Loop struct {
	mu     sync.Mutex
	phase  string
	phases []string
	rate   map[string][]time.Duration // of the connections opened at a fixed rate
	b2b    map[string][]time.Duration // of the back-to-back ones
	fails  []string
	done   chan struct{}
	wg     sync.WaitGroup
}

// StartLoop starts opening connections, in phase "before".
func StartLoop(dial Dialer, every time.Duration) *Loop {
	l := &Loop{phase: "before", phases: []string{"before"}, rate: map[string][]time.Duration{},
		b2b: map[string][]time.Duration{}, done: make(chan struct{})}
	// The back-to-back client's longest wait is the longest moment nobody accepted.
	l.wg.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-l.done:
				return
			default:
			}
			l.connect(dial, "probe", n, l.b2b)
		}
	})
	l.wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-l.done:
				return
			case <-tick.C:
			}
			l.wg.Go(func() { l.connect(dial, "connection", n, l.rate) })
		}
	})
	return l
}

// connect makes one connection, echoes on it, and records how long that took
// in into, or the failure.
func (l *Loop) connect(dial Dialer, what string, n int, into map[string][]time.Duration) {
	l.mu.Lock()
	phase := l.phase
	l.mu.Unlock()
	start := time.Now()
	err := EchoThrough(dial, what+" "+strconv.Itoa(n)+"\n")
	took := time.Since(start)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.fails = append(l.fails, fmt.Sprintf("%s: %s %d: %v", phase, what, n, err))
		return
	}
	into[phase] = append(into[phase], took)
}

// Mark starts a new phase.
func (l *Loop) Mark(phase string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.phase = phase
	l.phases = append(l.phases, phase)
}

// Stop stops opening connections and waits for those under way.
func (l *Loop) Stop() {
	close(l.done)
	l.wg.Wait()
}

// Report is what a stopped Loop saw.
type Report struct {
	Phases   []Phase
	Made     int
	Failures []string
}

// Phase is one phase's connections: those at the fixed rate, those back to
// back, and their median and longest times to an echo.
type Phase struct {
	Name                            string
	Rate, BackToBack                int
	RateMedian, RateLongest         time.Duration
	BackToBackMedian, BackToBackMax time.Duration
}

// Report summarises the Loop.
func (l *Loop) Report() Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := Report{Failures: slices.Clone(l.fails)}
	for _, name := range l.phases {
		p := Phase{Name: name}
		p.Rate, p.RateMedian, p.RateLongest = stats(l.rate[name])
		p.BackToBack, p.BackToBackMedian, p.BackToBackMax = stats(l.b2b[name])
		r.Made += p.Rate + p.BackToBack
		r.Phases = append(r.Phases, p)
	}
	return r
}

func stats(ts []time.Duration) (n int, median, longest time.Duration) {
	if len(ts) == 0 {
		return 0, 0, 0
	}
	ts = slices.Clone(ts)
	slices.Sort(ts)
	return len(ts), ts[len(ts)/2], ts[len(ts)-1]
}

// Empty names the phases in which no connection completed, of either kind.
func (r Report) Empty() []string {
	var names []string
	for _, p := range r.Phases {
		if p.Rate == 0 || p.BackToBack == 0 {
			names = append(names, p.Name)
		}
	}
	return names
}

func (r Report) String() string {
	var b strings.Builder
	round := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	for _, p := range r.Phases {
		fmt.Fprintf(&b, "new connections, %-22s %4d at a fixed rate, time to an echo: median %v, longest %v; %5d back to back: median %v, longest %v\n",
			p.Name+":", p.Rate, round(p.RateMedian), round(p.RateLongest), p.BackToBack, round(p.BackToBackMedian), round(p.BackToBackMax))
	}
	fmt.Fprintf(&b, "new connections: %d made, %d failed", r.Made, len(r.Failures))
	return b.String()
}
