package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
	"github.com/ambient-agent/ambient-agent/tests/lab/traffic"
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
	dial := meshedEcho(t, h1, h2, agents[h2])

	idle, err := traffic.Hold(dial, 50)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	stream, err := traffic.StartStream(dial)
	if err != nil {
		t.Fatal(err)
	}
	loop := traffic.StartLoop(dial, 50*time.Millisecond)

	time.Sleep(2 * time.Second) // the baseline
	olds := map[*lab.Host]*lab.Agent{}
	for _, h := range []*lab.Host{h1, h2} {
		old := agents[h]
		loop.Mark("handoff " + h.Name)
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
	loop.Mark("after")
	time.Sleep(time.Second)
	loop.Stop()
	sent := stream.Stop()
	for _, err := range idle.Check() {
		t.Errorf("after both handoffs: %v", err)
	}
	if err := stream.Err(); err != nil {
		t.Errorf("the stream across both handoffs: %v", err)
	}
	t.Logf("stream: %d bytes echoed byte-exact across both handoffs", sent)
	if sent < 1<<20 {
		t.Errorf("the stream moved %d bytes: too little to have crossed the handoffs", sent)
	}
	report(t, loop)

	// The old agents hold nothing more once the connections end: they exit.
	idle.Close()
	for h, old := range olds {
		code, exited := old.Wait(15 * time.Second)
		if !exited {
			t.Fatalf("the old agent on %s did not exit once its connections ended:\n%s", h.Name, old.Log())
		}
		if code != 0 {
			t.Errorf("the old agent on %s exited %d:\n%s", h.Name, code, old.Log())
		}
	}
	// The new ones serve on.
	if err := traffic.EchoThrough(dial, "after the old agents exited\n"); err != nil {
		t.Errorf("after the old agents exited: %v", err)
	}
	// What the old agents counted is not lost: the stream's bytes, relayed by them alone, are in the new ones'
	// byte counters.
	for _, h := range []*lab.Host{h1, h2} {
		metrics := scrape(t, h)
		if bytes := metricSum(metrics, "istio_tcp_received_bytes_total"); bytes < float64(sent) {
			t.Errorf("%s: istio_tcp_received_bytes_total is %v after the handoffs, less than the %d bytes the old agents relayed\n%s",
				h.Name, bytes, sent, grepIstio(metrics))
		}
	}
}

// metricSum is the sum of every series of the family name in a scrape.
func metricSum(body, name string) float64 {
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		fields := strings.Fields(line)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// meshedEcho starts an echo server on server:9000 and returns a dialer to it
// from client, once a connection through the mesh echoes.
func meshedEcho(t *testing.T, client, server *lab.Host, serverAgent *lab.Agent) traffic.Dialer {
	t.Helper()
	ln, err := server.Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go traffic.ServeEcho(ln)
	dial := func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return client.Dial(ctx, "tcp", server.Addr.String()+":9000")
	}
	waitMeshed(t, dial, serverAgent)
	return dial
}

// waitMeshed waits until a connection through the mesh echoes and the server's
// agent has seen it arrive over HBONE.
func waitMeshed(t *testing.T, dial traffic.Dialer, server *lab.Agent) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := traffic.EchoThrough(dial, "ping\n")
		if err == nil && strings.Contains(server.Log(), "inbound") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no echo through the mesh: %v\n%s", err, server.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// report logs what the loop saw and fails the test for every failed
// connection and every phase without one.
func report(t *testing.T, loop *traffic.Loop) {
	t.Helper()
	r := loop.Report()
	t.Log("\n" + r.String())
	for _, f := range r.Failures {
		t.Error(f)
	}
	for _, p := range r.Empty() {
		t.Errorf("no connection completed in phase %q", p)
	}
}

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

	dial := meshedEcho(t, h1, h2, server)
	held, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	loop := traffic.StartLoop(dial, 50*time.Millisecond)

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
	loop.Mark("reload, new binary")
	replace(agent)
	sup.Signal(syscall.SIGHUP)
	supervisor.WaitLog(t, "the new agent serves; the one it replaced drains", 30*time.Second)
	second := workerOf(t, sup.Pid(), worker)

	// A binary that fails at start: the running worker serves on, and the supervisor says so.
	loop.Mark("reload, broken binary")
	replace([]byte("#!/bin/sh\necho 'this agent is broken' >&2\nexit 3\n"))
	sup.Signal(syscall.SIGHUP)
	supervisor.WaitLog(t, "the new agent exited before it was ready", 10*time.Second)
	if !strings.Contains(supervisor.Log(), "this agent is broken") {
		t.Errorf("the broken agent's own words are not in the log:\n%s", supervisor.Log())
	}
	if !processAlive(second) || sup.Exited() {
		t.Fatalf("a failed upgrade stopped the running agent:\n%s", supervisor.Log())
	}
	// The running agent must go on serving after the failed upgrade: give the phase a second of traffic (the
	// failure is logged within milliseconds, shorter than one connection on a loaded machine).
	time.Sleep(time.Second)

	// The supervisor ends (a restart): the worker serves on; the next supervisor's worker takes over from it.
	loop.Mark("restart")
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
	loop.Mark("after")
	time.Sleep(500 * time.Millisecond)
	loop.Stop()
	if err := traffic.EchoOnce(held, "held across three handoffs\n"); err != nil {
		t.Errorf("the connection held across the handoffs: %v", err)
	}
	report(t, loop)
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

// A takeover that fails after the running agent released its gossip port (the
// new agent is stopped, then another is killed, while it waits for a seed that
// never answers) leaves the running agent serving: its rules back, its gossip
// place taken again, its connections untouched, new ones accepted throughout.
func TestAFailedTakeoverLeavesTheRunningAgentServing(t *testing.T) {
	l := lab.New(t, 2)
	key := gossipKey(t, l)
	h1, h2 := l.Hosts[0], l.Hosts[1]
	config := func(h *lab.Host, g *lab.Gossip) string {
		return lab.AgentConfig{Host: h, Gossip: g, Workloads: []lab.Workload{h.App("app-" + h.Name)}}.String()
	}
	var running, server *lab.Agent
	for _, h := range l.Hosts {
		h.Issue(agentBin, "default", "app-"+h.Name)
	}
	running = h1.StartAgent(agentBin, config(h1, &lab.Gossip{KeyFile: key, Seed: h2}))
	server = h2.StartAgent(agentBin, config(h2, &lab.Gossip{KeyFile: key, Seed: h1}))
	running.WaitReady(t, 20*time.Second)
	server.WaitReady(t, 20*time.Second)
	dial := meshedEcho(t, h1, h2, server)
	held, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	loop := traffic.StartLoop(dial, 50*time.Millisecond)
	time.Sleep(time.Second) // the baseline

	// A seed nobody answers: the new agent never gets ready once it has the gossip port.
	stuck := config(h1, &lab.Gossip{KeyFile: key, Keys: `join = ["192.0.2.1:7946"]`})
	stuck = strings.Replace(stuck, "join = []\n", "", 1)
	for i, end := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		loop.Mark("failed takeover, " + end.String())
		released := strings.Count(running.Log(), "gossip released for the new agent")
		next := h1.StartNextAgent(fmt.Sprintf("agent-next-%d", i), agentBin, stuck)
		deadline := time.Now().Add(20 * time.Second)
		for strings.Count(running.Log(), "gossip released for the new agent") == released && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if next.Exited() || time.Now().After(deadline) {
			t.Fatalf("the new agent never had the gossip port released:\n%s\n%s", next.Log(), running.Log())
		}
		next.Signal(end)
		if _, ok := next.Wait(10 * time.Second); !ok {
			t.Fatalf("the new agent did not end on %s", end)
		}
		running.WaitLog(t, "capture rules put back", 10*time.Second)
		deadline = time.Now().Add(30 * time.Second)
		for strings.Count(running.Log(), "gossip: listening") < i+2 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if strings.Count(running.Log(), "gossip: listening") < i+2 {
			t.Fatalf("the running agent did not take its gossip place again after the new one's %s:\n%s", end, running.Log())
		}
		if running.Exited() || !running.Ready() {
			t.Fatalf("the running agent is not serving after a failed takeover (%s):\n%s", end, running.Log())
		}
		if strings.Contains(running.Log(), "gossip: left the pool") {
			t.Fatalf("the running agent left the pool:\n%s", running.Log())
		}
	}
	loop.Mark("after")
	time.Sleep(time.Second)
	loop.Stop()
	report(t, loop)
	if err := traffic.EchoOnce(held, "held across two failed takeovers\n"); err != nil {
		t.Errorf("the connection held across the failed takeovers: %v", err)
	}
	if strings.Contains(server.Log(), "gossip: node down") {
		t.Errorf("the peer saw this node leave:\n%s", server.Log())
	}
}
