package handoff

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeAgent records what the handoff asked of the running agent.
type fakeAgent struct {
	mu    sync.Mutex
	calls []string
	drain chan struct{}
}

func (f *fakeAgent) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeAgent) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeAgent) State() json.RawMessage { return json.RawMessage(`{"mark":1337}`) }
func (f *fakeAgent) Adopting()              { f.record("adopting") }
func (f *fakeAgent) ReleaseGossip() error   { f.record("release-gossip"); return nil }
func (f *fakeAgent) Drain()                 { f.record("drain"); close(f.drain) }
func (f *fakeAgent) Resume()                { f.record("resume") }

// oldAgent serves a handoff socket with one TCP listener held, and answers on it.
func oldAgent(t *testing.T) (path string, ln net.Listener, agent *fakeAgent, done chan error) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "handoff.sock")
	s := NewSockets(nil)
	ln, err := s.Listen("tcp 127.0.0.1:0", func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	agent = &fakeAgent{drain: make(chan struct{})}
	srv, err := Listen(path, s, agent, "1.0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	done = make(chan error, 1)
	go func() { done <- srv.Serve(t.Context()) }()
	return path, ln, agent, done
}

func TestHandoffPassesTheListenerAndDrains(t *testing.T) {
	path, oldLn, agent, served := oldAgent(t)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("handoff socket: %v, mode %v; want 0600", err, fi)
	}
	tk, err := Dial(path, "2.0")
	if err != nil || tk == nil {
		t.Fatalf("Dial: %v %v", tk, err)
	}
	if tk.Version != "1.0" || tk.PID != os.Getpid() || string(tk.State) != `{"mark":1337}` {
		t.Errorf("takeover: version %q pid %d state %s", tk.Version, tk.PID, tk.State)
	}
	name := "tcp 127.0.0.1:0"
	newLn, err := tk.Sockets.Listen(name, func() (net.Listener, error) { t.Fatal("bound anew: the socket was not inherited"); return nil, nil })
	if err != nil {
		t.Fatal(err)
	}
	defer newLn.Close()
	if newLn.Addr().String() != oldLn.Addr().String() {
		t.Fatalf("inherited %s, want %s", newLn.Addr(), oldLn.Addr())
	}
	// The old agent stops accepting: a connection made now is the new one's.
	oldLn.Close()
	c, err := net.Dial("tcp", oldLn.Addr().String())
	if err != nil {
		t.Fatalf("dial after the old agent closed its copy: %v", err)
	}
	c.Close()
	if a, err := newLn.Accept(); err != nil {
		t.Fatalf("the new agent accepts nothing: %v", err)
	} else {
		a.Close()
	}
	if err := tk.ReleaseGossip(); err != nil {
		t.Fatal(err)
	}
	if err := tk.Drain(); err != nil {
		t.Fatal(err)
	}
	<-agent.drain
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if got, want := agent.got(), []string{"adopting", "release-gossip", "drain"}; !slices.Equal(got, want) {
		t.Errorf("the old agent was asked %v, want %v", got, want)
	}
	select {
	case <-tk.Done():
		t.Fatal("Done before the old agent exited")
	case <-time.After(50 * time.Millisecond):
	}
}

func TestAnAbortedHandoffResumes(t *testing.T) {
	path, _, agent, _ := oldAgent(t)
	tk, err := Dial(path, "2.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.ReleaseGossip(); err != nil {
		t.Fatal(err)
	}
	tk.Abort()
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(agent.got(), "resume") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got, want := agent.got(), []string{"adopting", "release-gossip", "resume"}; !slices.Equal(got, want) {
		t.Fatalf("the old agent was asked %v, want %v", got, want)
	}
	// It serves the next agent.
	tk2, err := Dial(path, "3.0")
	if err != nil || tk2 == nil {
		t.Fatalf("a second takeover: %v", err)
	}
	tk2.Abort()
}

func TestDialWithNobodyThereIsAFreshStart(t *testing.T) {
	dir := t.TempDir()
	if tk, err := Dial(filepath.Join(dir, "none.sock"), "1"); tk != nil || err != nil {
		t.Fatalf("no socket file: %v %v", tk, err)
	}
	// A file left by an agent that is gone.
	path := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if tk, err := Dial(path, "1"); tk != nil || err != nil {
		t.Fatalf("a stale socket file: %v %v", tk, err)
	}
}

func TestGarbageIsNotAHello(t *testing.T) {
	path, _, agent, _ := oldAgent(t)
	c, err := net.Dial("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("not json"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 100)); err != io.EOF && n != 0 {
		t.Fatalf("garbage was answered: %d %v", n, err)
	}
	c.Close()
	if got := agent.got(); len(got) != 0 {
		t.Fatalf("garbage reached the agent: %v", got)
	}
}

func TestUnclaimedSocketsAreClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	s := NewSockets(map[string]*os.File{"tcp gone": f})
	if got := s.Unclaimed(); !slices.Equal(got, []string{"tcp gone"}) {
		t.Fatalf("unclaimed %v", got)
	}
	if _, err := f.Stat(); err == nil {
		t.Fatal("an unclaimed socket stays open")
	}
}

func TestProbeHasNoSideEffect(t *testing.T) {
	path, _, agent, _ := oldAgent(t)
	pid, version, err := Probe(path)
	if err != nil || pid != os.Getpid() || version != "1.0" {
		t.Fatalf("Probe: pid %d version %q err %v", pid, version, err)
	}
	if got := agent.got(); len(got) != 0 {
		t.Fatalf("a probe reached the agent: %v", got)
	}
	if pid, _, err := Probe(filepath.Join(t.TempDir(), "none")); pid != 0 || err != nil {
		t.Fatalf("Probe with nobody there: %d %v", pid, err)
	}
}

func TestAStuckAgentIsNamed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handoff.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // listens, never accepts: a stopped agent
	start := time.Now()
	_, err = Dial(path, "2")
	var stuck *StuckError
	if !errors.As(err, &stuck) || stuck.PID != os.Getpid() {
		t.Fatalf("Dial to an agent that never answers: %v, want a StuckError naming pid %d", err, os.Getpid())
	}
	if took := time.Since(start); took < answerTimeout {
		t.Fatalf("gave up after %s", took)
	}
}

// A second agent that asks while one takes over is told to wait, and a probe
// is answered meanwhile: neither is taken for a stuck agent.
func TestASecondTakeoverIsToldToWait(t *testing.T) {
	path, _, agent, _ := oldAgent(t)
	first, err := Dial(path, "2")
	if err != nil || first == nil {
		t.Fatalf("first takeover: %v", err)
	}
	start := time.Now()
	_, err = Dial(path, "3")
	var busy *BusyError
	if !errors.As(err, &busy) || time.Since(start) > 2*time.Second {
		t.Fatalf("a second takeover during the first: %v after %s, want a BusyError at once", err, time.Since(start))
	}
	if pid, _, err := Probe(path); err != nil || pid != os.Getpid() {
		t.Fatalf("a probe during a takeover: %d %v", pid, err)
	}
	first.Abort()
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(agent.got(), "resume") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	second, err := Dial(path, "3")
	if err != nil || second == nil {
		t.Fatalf("a takeover once the first gave up: %v", err)
	}
	second.Abort()
}
