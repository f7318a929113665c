package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// A restart or an upgrade hands over (docs/operations.md, "Upgrades and
// restarts"): the new agent takes the running one's sockets and serves, the
// old one stops accepting and drains what it holds. Two meshed hosts, the
// client's agent replaced first, then the server's, each by another binary:
// a byte-exact stream and 50 idle connections stay up across both; new
// connections at 20 a second never fail; each old agent exits once its
// connections have ended.
func TestHandoffDropsNothing(t *testing.T) {
	l := lab.New(t, 2)
	key := gossipKey(t, l)
	h1, h2 := l.Hosts[0], l.Hosts[1]
	next := filepath.Join(scratch, "ambient-agent-next")
	if err := copyFile(agentBin, next); err != nil {
		t.Fatal(err)
	}
	config := func(h *lab.Host) string {
		return lab.AgentConfig{Host: h, Gossip: &lab.Gossip{KeyFile: key, Seed: h1}, Workloads: []lab.Workload{h.App("app-" + h.Name)}}.String()
	}
	agents := map[*lab.Host]*lab.Agent{}
	for _, h := range l.Hosts {
		h.Issue(agentBin, "default", "app-"+h.Name)
		agents[h] = h.StartAgent(agentBin, config(h))
	}
	for _, a := range agents {
		a.WaitReady(t, 20*time.Second)
	}
	ln, err := h2.Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serveEcho(ln)
	dst := h2.Addr.String() + ":9000"
	dial := func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return h1.Dial(ctx, "tcp", dst)
	}
	waitMeshed(t, dial, agents[h2])

	idle := make([]net.Conn, 50)
	for i := range idle {
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echoOnce(c, fmt.Sprintf("idle %d\n", i)); err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		idle[i] = c
	}
	stream := startStream(t, dial)
	loop := startConnectLoop(dial, 50*time.Millisecond)

	time.Sleep(2 * time.Second) // the baseline
	olds := map[*lab.Host]*lab.Agent{}
	for _, h := range []*lab.Host{h1, h2} {
		old := agents[h]
		loop.mark("handoff " + h.Name)
		n := h.StartNextAgent("agent-next", next, config(h))
		n.WaitLog(t, "took over", 30*time.Second)
		old.WaitLog(t, "draining for the agent that replaced this one", 10*time.Second)
		time.Sleep(2 * time.Second) // traffic through both, the old draining
		if old.Exited() {
			t.Fatalf("the old agent on %s exited while it held connections:\n%s", h.Name, old.Log())
		}
		t.Logf("%s: memory while the old agent drains: old %s, new %s", h.Name, rss(old.Pid()), rss(n.Pid()))
		if !n.Ready() {
			t.Fatalf("the new agent on %s is not ready:\n%s", h.Name, n.Log())
		}
		olds[h], agents[h] = old, n
	}
	loop.mark("after")
	time.Sleep(time.Second)
	loop.stop()
	sent := stream.stop()
	for i, c := range idle {
		if err := echoOnce(c, fmt.Sprintf("idle %d again\n", i)); err != nil {
			t.Errorf("idle connection %d after both handoffs: %v", i, err)
		}
	}
	if err := stream.err(); err != nil {
		t.Errorf("the stream across both handoffs: %v", err)
	}
	t.Logf("stream: %d bytes echoed byte-exact across both handoffs", sent)
	if sent < 1<<20 {
		t.Errorf("the stream moved %d bytes: too little to have crossed the handoffs", sent)
	}
	loop.report(t)

	// The old agents hold nothing more once the connections end: they exit.
	for _, c := range idle {
		c.Close()
	}
	for h, old := range olds {
		code, exited := old.Wait(15 * time.Second)
		if !exited {
			t.Fatalf("the old agent on %s did not exit once its connections ended:\n%s", h.Name, old.Log())
		}
		if code != 0 {
			t.Errorf("the old agent on %s exited %d:\n%s", h.Name, code, old.Log())
		}
	}
	// The new ones serve on, and a third takeover works as the first did.
	if err := echoThrough(dial, "after the old agents exited\n"); err != nil {
		t.Errorf("after the old agents exited: %v", err)
	}
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// serveEcho echoes every connection ln accepts.
func serveEcho(ln net.Listener) {
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

// waitMeshed waits until a connection through the mesh echoes and the server's
// agent has seen it arrive over HBONE.
func waitMeshed(t *testing.T, dial func() (net.Conn, error), server *lab.Agent) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := echoThrough(dial, "ping\n")
		if err == nil && strings.Contains(server.Log(), "inbound") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no echo through the mesh: %v\n%s", err, server.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func echoThrough(dial func() (net.Conn, error), msg string) error {
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.Close()
	return echoOnce(c, msg)
}

func echoOnce(c net.Conn, msg string) error {
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

// stream writes a known sequence through one connection and checks every byte
// that comes back.
type stream struct {
	c       net.Conn
	stopped chan struct{}
	wg      sync.WaitGroup
	echoed  atomic.Int64
	mu      sync.Mutex
	first   error
}

func startStream(t *testing.T, dial func() (net.Conn, error)) *stream {
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	s := &stream{c: c, stopped: make(chan struct{})}
	block := func(i int64) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8), byte(i * 7)}, 1365) }
	var written atomic.Int64
	s.wg.Go(func() {
		defer c.(*net.TCPConn).CloseWrite()
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
	return s
}

func (s *stream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.first == nil {
		s.first = err
	}
}

func (s *stream) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}

// stop ends the stream once everything written has come back; it returns the
// bytes echoed.
func (s *stream) stop() int64 {
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

// connectLoop opens a connection every interval, echoes on it and records how
// long that took, per phase.
type connectLoop struct {
	mu     sync.Mutex
	phase  string
	phases []string
	times  map[string][]time.Duration // of the connections opened at a fixed rate
	probes map[string][]time.Duration // of the back-to-back ones
	fails  []string
	done   chan struct{}
	wg     sync.WaitGroup
}

func startConnectLoop(dial func() (net.Conn, error), every time.Duration) *connectLoop {
	l := &connectLoop{phase: "before", phases: []string{"before"}, times: map[string][]time.Duration{},
		probes: map[string][]time.Duration{}, done: make(chan struct{})}
	// One more client connects back to back, one connection at a time: its
	// longest wait is the longest moment nobody accepted.
	l.wg.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-l.done:
				return
			default:
			}
			l.connect(dial, "probe", n, l.probes)
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
			l.wg.Go(func() { l.connect(dial, "connection", n, l.times) })
		}
	})
	return l
}

// connect makes one connection, echoes on it, and records how long that took
// in into, or the failure.
func (l *connectLoop) connect(dial func() (net.Conn, error), what string, n int, into map[string][]time.Duration) {
	l.mu.Lock()
	phase := l.phase
	l.mu.Unlock()
	start := time.Now()
	err := echoThrough(dial, what+" "+strconv.Itoa(n)+"\n")
	took := time.Since(start)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.fails = append(l.fails, fmt.Sprintf("%s: %s %d: %v", phase, what, n, err))
		return
	}
	into[phase] = append(into[phase], took)
}

func (l *connectLoop) mark(phase string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.phase = phase
	l.phases = append(l.phases, phase)
}

func (l *connectLoop) stop() {
	close(l.done)
	l.wg.Wait()
}

// report fails the test for any failed connection and logs, per phase, the
// connections made and their median and longest time to an echo.
func (l *connectLoop) report(t *testing.T) {
	t.Helper()
	total := 0
	for _, p := range l.phases {
		ts := slices.Clone(l.times[p])
		slices.Sort(ts)
		total += len(ts)
		if len(ts) == 0 {
			t.Errorf("no connection completed in phase %q", p)
			continue
		}
		ps := slices.Clone(l.probes[p])
		slices.Sort(ps)
		if len(ps) == 0 {
			t.Errorf("no back-to-back connection completed in phase %q", p)
			continue
		}
		total += len(ps)
		t.Logf("new connections, %-12s %4d at 20/s, time to an echo: median %v, longest %v; %5d back to back: median %v, longest %v",
			p+":", len(ts), round(ts[len(ts)/2]), round(ts[len(ts)-1]), len(ps), round(ps[len(ps)/2]), round(ps[len(ps)-1]))
	}
	t.Logf("new connections: %d made, %d failed", total, len(l.fails))
	for _, f := range l.fails {
		t.Error(f)
	}
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

// rss is a process's resident memory, as /proc says it.
func rss(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "?"
}

// The supervisor the systemd unit runs (run -supervise), outside systemd: a
// reload when the binary on disk changed hands over to a worker of the new
// binary; a reload to a binary that fails at start leaves the running worker
// serving; the supervisor's end (a restart) leaves the worker serving, and the
// next supervisor's worker takes over from it. New connections never fail.
func TestSupervisorHandsOver(t *testing.T) {
	l := lab.New(t, 2)
	h1, h2 := l.Hosts[0], l.Hosts[1]
	dir := t.TempDir()
	bin := filepath.Join(dir, "ambient-agent")
	if err := copyFile(agentBin, bin); err != nil {
		t.Fatal(err)
	}
	for _, h := range l.Hosts {
		h.Issue(agentBin, "default", "app-"+h.Name)
	}
	server := h2.StartAgent(agentBin, lab.AgentConfig{Host: h2, Workloads: []lab.Workload{h2.App("app-h2")}, Remote: []lab.Remote{h1.RemoteApp("app-h1")}}.String())
	server.WaitReady(t, 20*time.Second)
	config := h1.WriteConfig(lab.AgentConfig{Host: h1, Workloads: []lab.Workload{h1.App("app-h1")}, Remote: []lab.Remote{h2.RemoteApp("app-h2")}}.String())
	sup := h1.Start("supervisor", bin, "run", "-supervise", "-config", config)
	supervisor := &lab.Agent{Proc: sup, Host: h1, ConfigPath: config}
	supervisor.WaitReady(t, 20*time.Second)
	worker := workerOf(t, sup.Pid())

	ln, err := h2.Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serveEcho(ln)
	dial := func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return h1.Dial(ctx, "tcp", h2.Addr.String()+":9000")
	}
	waitMeshed(t, dial, server)
	held, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	loop := startConnectLoop(dial, 50*time.Millisecond)

	// A new binary on disk, then a reload: a worker of it takes over.
	replace := func(content []byte) {
		t.Helper()
		tmp := bin + ".new"
		if err := os.WriteFile(tmp, content, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, bin); err != nil {
			t.Fatal(err)
		}
	}
	agent, err := os.ReadFile(agentBin)
	if err != nil {
		t.Fatal(err)
	}
	loop.mark("reload, new binary")
	replace(agent)
	sup.Signal(syscall.SIGHUP)
	supervisor.WaitLog(t, "the new agent serves; the one it replaced drains", 30*time.Second)
	second := workerOf(t, sup.Pid(), worker)

	// A binary that fails at start: the running worker serves on, and the supervisor says so.
	loop.mark("reload, broken binary")
	replace([]byte("#!/bin/sh\necho 'this agent is broken' >&2\nexit 3\n"))
	sup.Signal(syscall.SIGHUP)
	supervisor.WaitLog(t, "the new agent exited before it was ready", 10*time.Second)
	if !strings.Contains(supervisor.Log(), "this agent is broken") {
		t.Errorf("the broken agent's own words are not in the log:\n%s", supervisor.Log())
	}
	if !processAlive(second) || sup.Exited() {
		t.Fatalf("a failed upgrade stopped the running agent:\n%s", supervisor.Log())
	}

	// The supervisor ends (a restart): the worker serves on; the next supervisor's worker takes over from it.
	loop.mark("restart")
	replace(agent)
	sup.Signal(syscall.SIGTERM)
	if _, ok := sup.Wait(5 * time.Second); !ok {
		t.Fatal("the supervisor did not exit on SIGTERM")
	}
	if !processAlive(second) {
		t.Fatal("the worker ended with its supervisor")
	}
	next := h1.Start("supervisor-next", bin, "run", "-supervise", "-config", config)
	nextSup := &lab.Agent{Proc: next, Host: h1, ConfigPath: config}
	nextSup.WaitLog(t, "the new agent serves; the one the previous start left drains", 30*time.Second)
	workerOf(t, next.Pid())
	loop.mark("after")
	time.Sleep(500 * time.Millisecond)
	loop.stop()
	if err := echoOnce(held, "held across three handoffs\n"); err != nil {
		t.Errorf("the connection held across the handoffs: %v", err)
	}
	loop.report(t)
	held.Close()
	// The replaced workers exit once their connection is closed.
	for _, pid := range []int{worker, second} {
		deadline := time.Now().Add(15 * time.Second)
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if processAlive(pid) {
			t.Errorf("the replaced worker %d did not exit once its connections ended", pid)
		}
	}
	next.Signal(syscall.SIGTERM)
}

// workerOf waits for the one child of the supervisor that is not in not.
func workerOf(t *testing.T, supervisor int, not ...int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		// Any of the supervisor's threads may have started it.
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", supervisor))
		var children []string
		for _, task := range tasks {
			b, _ := os.ReadFile(task)
			children = append(children, strings.Fields(string(b))...)
		}
		for _, f := range children {
			if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(not, pid) {
				return pid
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the supervisor %d has no new worker", supervisor)
	return 0
}

// processAlive says whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}
