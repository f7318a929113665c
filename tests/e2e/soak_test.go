package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
	"github.com/ambient-agent/ambient-agent/tests/lab/traffic"
)

// The soak (docs/reliability.md): seven hosts carry checked traffic for SOAK (default 2m; `make soak` runs 30m)
// while faults are injected at random, seeded (SOAK_SEED) and logged. Every failed exchange must fall in the window
// of a fault that touches a host it crosses, within that fault's documented bound; no plaintext byte of captured
// traffic may cross the clients' links; no agent may grow its goroutines or descriptors steadily.
//
//	h1 client: short connections to echo's VIP (byte-exact, checksummed), to the waypoint's service, a long-lived
//	   stream and held idle connections to one endpoint, DNS lookups through the agent's proxy; the gossip seed
//	h2, h3, h4 echo endpoints (service echo, and wecho through the waypoint)
//	h5 the waypoint
//	h6 two identities on one host (alice, bob, by address): short connections to echo's VIP
//	h7 outside the mesh: plaintext connections to h4's echo

// soakFlow is one kind of traffic and what became of it.
type soakFlow struct {
	Name     string   `json:"name"`
	Hosts    []string `json:"hosts"` // the hosts it crosses: a fault on one of them explains its failures
	Attempts int      `json:"attempts"`
	OK       int      `json:"succeeded"`
	Bytes    int64    `json:"bytes_verified"`
	Failures []soakFailure
	// deniedFrom..deniedTo: the flow's identity is denied (policy churn); an exchange that succeeds then is a
	// policy violation, and failures then are the policy's.
	denied    []window
	successes []window // of the flows whose identity policy churn denies
	mu        sync.Mutex
}

type window struct{ from, to time.Time }

type soakFailure struct {
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	Err   string    `json:"error"`
	Fault string    `json:"fault"` // the fault that explains it; "" unexplained
}

// soakFault is one injected fault.
type soakFault struct {
	Name  string    `json:"name"`
	Hosts []string  `json:"hosts"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Bound: failures of flows crossing Hosts are explained from Start to End+Bound; 0: the fault must not make
	// any exchange fail.
	Bound time.Duration `json:"bound"`
	// Converged: after a cut or a partition heals, the time until every agent sees every member alive again.
	Converged time.Duration `json:"converged,omitempty"`
	// OutOfMesh: the hosts left the mesh meanwhile (a graceful stop removes their capture, and their peers pass
	// connections to them through as to any host outside the mesh): plaintext to or from them is theirs, until
	// 5 s after End.
	OutOfMesh bool   `json:"out_of_mesh,omitempty"`
	Err       string `json:"error,omitempty"` // the injection itself failed
}

type soakSample struct {
	At         time.Time `json:"at"`
	Pid        int       `json:"pid"`
	FDs        int       `json:"fds"`
	RSS        int64     `json:"rss_bytes"`
	Goroutines int       `json:"goroutines"`
}

type soak struct {
	t       *testing.T
	l       *lab.Lab
	bin     string
	key     string
	seed    uint64
	hosts   map[string]*lab.Host
	configs map[*lab.Host]string
	vip     string
	wvip    string
	bobAddr netip.Addr

	mu       sync.Mutex
	agents   map[*lab.Host]*lab.Agent
	restarts int
	faults   []*soakFault
	flows    []*soakFlow
	samples  map[string][]soakSample // by host
}

// soakDuration is SOAK (a Go duration), 2 minutes by default.
func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv("SOAK")
	if v == "" {
		return 2 * time.Minute
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Minute {
		t.Fatalf("SOAK=%q: a duration of at least 1m", v)
	}
	return d
}

func soakSeed(t *testing.T) uint64 {
	if v := os.Getenv("SOAK_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SOAK_SEED=%q: %v", v, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

func TestSoak(t *testing.T) {
	d, seed := soakDuration(t), soakSeed(t)
	t.Logf("soak: %s, seed %d (SOAK_SEED=%d repeats its faults)", d, seed, seed)
	s := newSoak(t, agentBin, seed)
	rep := s.run(d, true)
	s.publish(rep)
	for _, p := range rep.Problems {
		t.Error(p)
	}
}

func newSoak(t *testing.T, bin string, seed uint64) *soak {
	lab.Require(t, "tcpdump", "tc", "nft")
	l := lab.New(t, 7)
	s := &soak{t: t, l: l, bin: bin, seed: seed, hosts: map[string]*lab.Host{}, configs: map[*lab.Host]string{},
		agents: map[*lab.Host]*lab.Agent{}, samples: map[string][]soakSample{}}
	for _, h := range l.Hosts {
		s.hosts[h.Name] = h
		h.DefaultRoute()
	}
	s.key = gossipKey(t, l)
	client, wp, multi := s.hosts["h1"], s.hosts["h5"], s.hosts["h6"]
	s.bobAddr = netip.MustParseAddr("10.77.0.116")
	multi.MustRun("ip", "addr", "add", s.bobAddr.String()+"/24", "dev", "eth0")
	client.SetResolvConf("nameserver 192.0.2.53\n")

	client.Issue(bin, "default", "client")
	s.configs[client] = lab.AgentConfig{Host: client, Gossip: &lab.Gossip{KeyFile: s.key, Seed: s.hosts["h2"]}, Tables: fmt.Sprintf(`
[[workload]]
name = "client"
service_account = "client"
addresses = [%q]
[dns]
capture = true
upstreams = ["192.0.2.53"]
`, client.Addr)}.String()
	for i, name := range []string{"h2", "h3", "h4"} {
		h := s.hosts[name]
		h.Issue(bin, "default", "echo")
		dir := filepath.Join(h.Dir, "policies")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, port := range []string{":9000", ":9001"} {
			ln, err := h.Listen("tcp", port)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go traffic.ServeEcho(ln)
		}
		s.configs[h] = lab.AgentConfig{Host: h, Gossip: &lab.Gossip{KeyFile: s.key, Seed: client}, Tables: fmt.Sprintf(`
[[workload]]
name = "echo%[1]d"
service_account = "echo"
addresses = [%[2]q]
[[service]]
name = "echo"
ports = [{ port = 9000, target_port = 9000 }]
workloads = ["echo%[1]d"]
[[service]]
name = "wecho"
use_waypoint = "wp"
ports = [{ port = 9001, target_port = 9001 }]
workloads = ["echo%[1]d"]
[policy]
dir = %[3]q
`, i+1, h.Addr, dir)}.String()
	}
	wp.Issue(bin, "default", "wp")
	wpDir := filepath.Join(wp.Dir, "policies")
	if err := os.MkdirAll(wpDir, 0o755); err != nil {
		t.Fatal(err)
	}
	s.configs[wp] = lab.AgentConfig{Host: wp, Gossip: &lab.Gossip{KeyFile: s.key, Seed: client}, Tables: fmt.Sprintf(waypointBody, "wp", "wp", "", wp.Addr, wpDir)}.String()
	multi.Issue(bin, "default", "alice")
	multi.Issue(bin, "default", "bob")
	s.configs[multi] = lab.AgentConfig{Host: multi, Gossip: &lab.Gossip{KeyFile: s.key, Seed: client}, Tables: fmt.Sprintf(`
[[workload]]
name = "alice"
service_account = "alice"
addresses = [%q]
[[workload]]
name = "bob"
service_account = "bob"
addresses = [%q]
`, multi.Addr, s.bobAddr)}.String()

	for _, name := range []string{"h1", "h2", "h3", "h4", "h5", "h6"} {
		h := s.hosts[name]
		s.agents[h] = h.StartAgent(bin, s.configs[h])
	}
	for _, a := range s.agents {
		a.WaitReady(t, 30*time.Second)
	}
	waitMesh(t, s.agents[client], gossipConverges, "echo's three endpoints and wecho", func(m meshDump) bool {
		s.vip, s.wvip = m.serviceVIP("echo"), m.serviceVIP("wecho")
		for _, svc := range m.Services {
			if svc.Name == "echo" && len(svc.Endpoints) != 3 {
				return false
			}
		}
		return s.vip != "" && s.wvip != "" && len(m.Waypoints) == 1
	})
	waitMesh(t, s.agents[multi], gossipConverges, "echo's three endpoints", func(m meshDump) bool {
		for _, svc := range m.Services {
			if svc.Name == "echo" {
				return len(svc.Endpoints) == 3
			}
		}
		return false
	})
	return s
}

// exchange sends size random bytes on c and checks that the same come back.
func exchange(c net.Conn, size int) (int64, error) {
	buf := make([]byte, size)
	_, _ = rand.Read(buf)
	want := sha256.Sum256(buf)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(buf); err != nil {
		return 0, err
	}
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		return 0, fmt.Errorf("read back: %w", err)
	}
	if sha256.Sum256(got) != want {
		return 0, fmt.Errorf("CORRUPTED: %d bytes came back different", size)
	}
	return int64(size), nil
}

func (s *soak) agent(h *lab.Host) *lab.Agent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.agents[h]
}

func (s *soak) flow(name string, hosts ...string) *soakFlow {
	f := &soakFlow{Name: name, Hosts: hosts}
	s.mu.Lock()
	s.flows = append(s.flows, f)
	s.mu.Unlock()
	return f
}

func (f *soakFlow) record(from time.Time, n int64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Attempts++
	if err != nil {
		f.Failures = append(f.Failures, soakFailure{From: from, To: time.Now(), Err: err.Error()})
		return
	}
	f.OK++
	f.Bytes += n
	if slices.Contains(f.Hosts, "bob") {
		f.successes = append(f.successes, window{from, time.Now()})
	}
}

// every runs once at the given interval until ctx ends, recording each attempt.
func (f *soakFlow) every(ctx context.Context, wg *sync.WaitGroup, interval time.Duration, once func() (int64, error)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			from := time.Now()
			n, err := once()
			if ctx.Err() == nil {
				f.record(from, n, err)
			}
		}
	}()
}

// short is one connection from h (from src when valid) to addr: a checked exchange of 4 KiB.
func short(h *lab.Host, src netip.Addr, addr string) func() (int64, error) {
	return func() (int64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var c net.Conn
		var err error
		if src.IsValid() {
			c, err = h.DialFrom(ctx, src, "tcp", addr)
		} else {
			c, err = h.Dial(ctx, "tcp", addr)
		}
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return exchange(c, 4096)
	}
}

// startTraffic starts every flow; they stop with ctx.
func (s *soak) startTraffic(ctx context.Context, wg *sync.WaitGroup) {
	client, multi, outside := s.hosts["h1"], s.hosts["h6"], s.hosts["h7"]
	echoes := []string{"h2", "h3", "h4"}
	s.flow("client to echo's VIP", append([]string{"h1"}, echoes...)...).every(ctx, wg, 100*time.Millisecond, short(client, netip.Addr{}, s.vip+":9000"))
	s.flow("client to wecho through the waypoint", append([]string{"h1", "h5"}, echoes...)...).every(ctx, wg, 200*time.Millisecond, short(client, netip.Addr{}, s.wvip+":9001"))
	s.flow("alice to echo's VIP", append([]string{"h6"}, echoes...)...).every(ctx, wg, 200*time.Millisecond, short(multi, multi.Addr, s.vip+":9000"))
	s.flow("bob to echo's VIP", append([]string{"h6", "bob"}, echoes...)...).every(ctx, wg, 400*time.Millisecond, short(multi, s.bobAddr, s.vip+":9000"))
	s.flow("outside, plaintext, to h4's echo", "h7", "h4").every(ctx, wg, 500*time.Millisecond, short(outside, netip.Addr{}, s.hosts["h4"].Addr.String()+":9000"))

	// DNS through the client's agent (captured: the resolver's server is nowhere).
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return client.Dial(ctx, network, "192.0.2.53:53")
	}}
	s.flow("client's DNS lookups of echo", "h1").every(ctx, wg, 500*time.Millisecond, func() (int64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		addrs, err := resolver.LookupHost(ctx, "echo.default.svc.cluster.local")
		if err != nil {
			return 0, err
		}
		for _, a := range addrs {
			if a == s.vip {
				return 0, nil
			}
		}
		return 0, fmt.Errorf("echo resolved to %v, not %s", addrs, s.vip)
	})

	// A long-lived stream to h2, 16 KiB exchanges back to back; reopened when it breaks.
	stream := s.flow("client's long-lived stream to h2", "h1", "h2")
	wg.Add(1)
	go func() {
		defer wg.Done()
		var c net.Conn
		defer func() {
			if c != nil {
				c.Close()
			}
		}()
		for ctx.Err() == nil {
			from := time.Now()
			if c == nil {
				dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				var err error
				c, err = client.Dial(dctx, "tcp", s.hosts["h2"].Addr.String()+":9000")
				cancel()
				if err != nil {
					if ctx.Err() == nil {
						stream.record(from, 0, err)
					}
					time.Sleep(time.Second)
					continue
				}
			}
			n, err := exchange(c, 16<<10)
			if ctx.Err() != nil {
				return
			}
			stream.record(from, n, err)
			if err != nil {
				c.Close()
				c = nil
				time.Sleep(time.Second)
				continue
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	// Ten connections to h3 held idle, each checked every 20 s; one that fails is opened again.
	idle := s.flow("client's idle connections to h3", "h1", "h3")
	wg.Add(1)
	go func() {
		defer wg.Done()
		conns := make([]net.Conn, 10)
		// A held connection may have broken any time since its last good check: its failure counts from then.
		lastOK := make([]time.Time, len(conns))
		defer func() {
			for _, c := range conns {
				if c != nil {
					c.Close()
				}
			}
		}()
		for ctx.Err() == nil {
			for i := range conns {
				from := time.Now()
				if conns[i] == nil {
					dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					c, err := client.Dial(dctx, "tcp", s.hosts["h3"].Addr.String()+":9000")
					cancel()
					if err != nil {
						if ctx.Err() == nil {
							idle.record(from, 0, err)
						}
						continue
					}
					conns[i] = c
				}
				if !lastOK[i].IsZero() {
					from = lastOK[i]
				}
				n, err := exchange(conns[i], 512)
				if ctx.Err() != nil {
					return
				}
				idle.record(from, n, err)
				lastOK[i] = time.Now()
				if err != nil {
					conns[i].Close()
					conns[i], lastOK[i] = nil, time.Time{}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Second):
			}
		}
	}()
}

// Faults. Each runs to its end (the agent back, the link healed) and returns its record.

// restartAgent starts h's agent again (a new process, its own log) and waits until it is ready; with handoff, the
// running agent is still there, and the new one must take over from it first.
func (s *soak) restartAgent(h *lab.Host, handoff bool) error {
	s.mu.Lock()
	s.restarts++
	label := fmt.Sprintf("agent-%d", s.restarts)
	s.mu.Unlock()
	a := h.StartNextAgent(label, s.bin, s.configs[h])
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if (!handoff || strings.Contains(a.Log(), "took over")) && a.Ready() {
			s.mu.Lock()
			s.agents[h] = a
			s.mu.Unlock()
			return nil
		}
		if a.Exited() {
			return fmt.Errorf("the agent on %s exited at start:\n%s", h.Name, tail(a.Log(), 20))
		}
	}
	return fmt.Errorf("the agent on %s is not ready 30 s after its start:\n%s", h.Name, tail(a.Log(), 20))
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// reload sends SIGHUP to h's agent and waits for the reload's outcome in its log: want "configuration reloaded" or
// "reload refused"-like lines (any of wantAny).
func (s *soak) reload(h *lab.Host, wantAny ...string) error {
	a := s.agent(h)
	log := a.Log()
	before := map[string]int{}
	for _, w := range wantAny {
		before[w] = strings.Count(log, w)
	}
	if err := a.Signal(syscall.SIGHUP); err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		log := a.Log()
		for _, w := range wantAny {
			if strings.Count(log, w) > before[w] {
				return nil
			}
		}
	}
	return fmt.Errorf("the agent on %s did not log any of %q after SIGHUP:\n%s", h.Name, wantAny, tail(a.Log(), 20))
}

type soakInjector struct {
	name   string
	weight int
	inject func(rng *mrand.Rand) *soakFault
}

func (s *soak) injectors() []soakInjector {
	agentHosts := []string{"h1", "h2", "h3", "h4", "h5", "h6"}
	echoes := []string{"h2", "h3", "h4"}
	pick := func(rng *mrand.Rand, from []string) *lab.Host { return s.hosts[from[rng.IntN(len(from))]] }
	pause := func(rng *mrand.Rand, lo, hi int) time.Duration {
		return time.Duration(lo+rng.IntN(hi-lo+1)) * time.Second
	}
	return []soakInjector{
		{"kill -9 and restart an agent", 3, func(rng *mrand.Rand) *soakFault {
			h := pick(rng, agentHosts)
			f := &soakFault{Name: "kill -9 " + h.Name, Hosts: []string{h.Name}, Start: time.Now(), Bound: 15 * time.Second}
			a := s.agent(h)
			_ = a.Signal(syscall.SIGKILL)
			a.Wait(10 * time.Second)
			time.Sleep(time.Second)
			if err := s.restartAgent(h, false); err != nil {
				f.Err = err.Error()
			}
			f.End = time.Now()
			return f
		}},
		{"stop (drain) and start an agent", 2, func(rng *mrand.Rand) *soakFault {
			h := pick(rng, agentHosts)
			f := &soakFault{Name: "stop and start " + h.Name, Hosts: []string{h.Name}, Start: time.Now(), Bound: 15 * time.Second, OutOfMesh: true}
			s.agent(h).Kill()
			time.Sleep(pause(rng, 1, 5))
			if err := s.restartAgent(h, false); err != nil {
				f.Err = err.Error()
			}
			f.End = time.Now()
			return f
		}},
		{"a hitless restart (handoff to a new agent)", 2, func(rng *mrand.Rand) *soakFault {
			h := pick(rng, agentHosts)
			f := &soakFault{Name: "handoff " + h.Name, Hosts: []string{h.Name}, Start: time.Now()}
			if err := s.restartAgent(h, true); err != nil {
				f.Err = err.Error()
			}
			f.End = time.Now()
			return f
		}},
		{"reload, same config", 2, func(rng *mrand.Rand) *soakFault {
			h := pick(rng, agentHosts)
			f := &soakFault{Name: "reload " + h.Name, Hosts: []string{h.Name}, Start: time.Now()}
			if err := s.reload(h, "configuration reloaded"); err != nil {
				f.Err = err.Error()
			}
			f.End = time.Now()
			return f
		}},
		{"reload, a broken config (refused)", 2, func(rng *mrand.Rand) *soakFault {
			h := pick(rng, agentHosts)
			f := &soakFault{Name: "bad reload " + h.Name, Hosts: []string{h.Name}, Start: time.Now()}
			a := s.agent(h)
			good := s.configs[h]
			if err := os.WriteFile(a.ConfigPath, []byte(good+"\n[[workload]]\nname = 7\n"), 0o644); err != nil {
				f.Err = err.Error()
			} else {
				if err := s.reload(h, "reload rejected, keeping the running configuration"); err != nil {
					f.Err = err.Error()
				}
				if err := os.WriteFile(a.ConfigPath, []byte(good), 0o644); err != nil {
					f.Err = err.Error()
				}
			}
			if a.Exited() {
				f.Err = "the agent exited on a bad reload"
			}
			f.End = time.Now()
			return f
		}},
		{"a host's link cut", 2, func(rng *mrand.Rand) *soakFault {
			h := pick(rng, echoes)
			f := &soakFault{Name: "link cut " + h.Name, Hosts: []string{h.Name}, Start: time.Now(), Bound: 20 * time.Second}
			s.l.SetLink(h, false)
			time.Sleep(pause(rng, 5, 15))
			s.l.SetLink(h, true)
			f.End = time.Now()
			f.Converged = s.converge(f)
			return f
		}},
		{"a partition", 2, func(rng *mrand.Rand) *soakFault {
			h := pick(rng, echoes)
			a, b := []*lab.Host{h}, []*lab.Host{s.hosts["h1"], s.hosts["h5"]}
			f := &soakFault{Name: "partition " + h.Name + " | h1 h5", Hosts: []string{h.Name, "h1", "h5"}, Start: time.Now(), Bound: 20 * time.Second}
			s.network(f, func() error { return s.l.Partition(a, b) }, pause(rng, 5, 15))
			f.Converged = s.converge(f)
			return f
		}},
		{"packet loss on a link", 2, func(rng *mrand.Rand) *soakFault {
			h := pick(rng, []string{"h1", "h2", "h3", "h4", "h5", "h6"})
			pct := 5 + rng.IntN(11)
			f := &soakFault{Name: fmt.Sprintf("%d%% loss %s", pct, h.Name), Hosts: []string{h.Name}, Start: time.Now(), Bound: 15 * time.Second}
			s.network(f, func() error { return s.l.Lose(h, pct) }, pause(rng, 5, 15))
			return f
		}},
		{"a slow link (a 2 Mbit/s queue)", 1, func(rng *mrand.Rand) *soakFault {
			h := pick(rng, echoes)
			f := &soakFault{Name: "slow link " + h.Name, Hosts: []string{h.Name}, Start: time.Now(), Bound: 15 * time.Second}
			s.network(f, func() error { return s.l.Slow(h, "2mbit", 200*time.Millisecond) }, pause(rng, 5, 15))
			return f
		}},
		{"certificate rotation", 2, func(rng *mrand.Rand) *soakFault {
			h := pick(rng, []string{"h1", "h2", "h3", "h4", "h5"})
			sa := map[string]string{"h1": "client", "h2": "echo", "h3": "echo", "h4": "echo", "h5": "wp"}[h.Name]
			f := &soakFault{Name: "certificate rotation " + h.Name, Hosts: []string{h.Name}, Start: time.Now()}
			h.Issue(s.bin, "default", sa)
			time.Sleep(2 * time.Second)
			f.End = time.Now()
			return f
		}},
		{"policy churn: bob denied, then allowed", 2, func(rng *mrand.Rand) *soakFault {
			// Bob's exchanges fail from the first reload to a moment after the last: the policy's.
			f := &soakFault{Name: "deny bob", Hosts: []string{"bob"}, Start: time.Now(), Bound: 5 * time.Second}
			if err := s.setBobDenied(true); err != nil {
				f.Err = err.Error()
			}
			applied := time.Now()
			time.Sleep(pause(rng, 5, 15))
			lifted := time.Now()
			if err := s.setBobDenied(false); err != nil {
				f.Err = err.Error()
			}
			f.End = time.Now()
			bob := s.bobFlow()
			bob.mu.Lock()
			bob.denied = append(bob.denied, window{applied, lifted})
			bob.mu.Unlock()
			return f
		}},
		{"gossip key rotation", 1, func(rng *mrand.Rand) *soakFault {
			f := &soakFault{Name: "gossip key rotation", Hosts: []string{}, Start: time.Now()}
			if err := s.rotateGossipKey(); err != nil {
				f.Err = err.Error()
			}
			f.End = time.Now()
			return f
		}},
	}
}

// network applies a fault of the switch for d, then heals it; f ends then.
func (s *soak) network(f *soakFault, apply func() error, d time.Duration) {
	if err := apply(); err != nil {
		f.Err = err.Error()
	}
	time.Sleep(d)
	if err := s.l.Heal(); err != nil {
		f.Err = err.Error()
	}
	f.End = time.Now()
}

func (s *soak) bobFlow() *soakFlow {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.flows {
		if strings.HasPrefix(f.Name, "bob ") {
			return f
		}
	}
	panic("no bob flow")
}

const denyBob = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-bob, namespace: default}
spec:
  action: DENY
  rules: [{from: [{source: {principals: ["cluster.local/ns/default/sa/bob"]}}]}]
`

// setBobDenied writes or removes the DENY for bob on the three echo hosts and reloads them.
func (s *soak) setBobDenied(deny bool) error {
	for _, name := range []string{"h2", "h3", "h4"} {
		h := s.hosts[name]
		path := filepath.Join(h.Dir, "policies", "deny-bob.yaml")
		var err error
		if deny {
			err = os.WriteFile(path, []byte(denyBob), 0o644)
		} else {
			err = os.Remove(path)
		}
		if err != nil {
			return err
		}
		// The policies are compiled again after the configuration's reload is logged.
		if err := s.reload(h, "policies loaded"); err != nil {
			return err
		}
	}
	return nil
}

// rotateGossipKey rotates the lab's shared key as docs/gossip.md says: the new key second, reload all; first,
// reload all; alone, reload all.
func (s *soak) rotateGossipKey() error {
	old, err := os.ReadFile(s.key)
	if err != nil {
		return err
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	fresh := base64.StdEncoding.EncodeToString(raw)
	oldKey := strings.TrimSpace(string(old))
	for _, content := range []string{oldKey + "\n" + fresh + "\n", fresh + "\n" + oldKey + "\n", fresh + "\n"} {
		if err := os.WriteFile(s.key, []byte(content), 0o600); err != nil {
			return err
		}
		for _, name := range []string{"h1", "h2", "h3", "h4", "h5", "h6"} {
			if err := s.reload(s.hosts[name], "gossip keys reloaded"); err != nil {
				return err
			}
		}
	}
	return nil
}

// converge waits until every agent sees every other agent's member alive, up to 2 minutes, and returns how long it
// took from the fault's end.
func (s *soak) converge(f *soakFault) time.Duration {
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if s.converged() {
			return time.Since(f.End)
		}
	}
	f.Err = "the pool did not converge within 2 minutes of the fault's end"
	return time.Since(f.End)
}

func (s *soak) converged() bool {
	for _, name := range []string{"h1", "h2", "h3", "h4", "h5", "h6"} {
		body, err := s.agent(s.hosts[name]).Admin("/config_dump")
		if err != nil {
			return false
		}
		var d struct {
			Peers []struct {
				Name  string `json:"name"`
				State string `json:"state"`
			} `json:"peers"`
		}
		if json.Unmarshal([]byte(body), &d) != nil {
			return false
		}
		alive := 0
		for _, p := range d.Peers {
			if p.State == "alive" || p.State == "self" {
				alive++
			}
		}
		if alive != 6 {
			return false
		}
	}
	return true
}

// sample records each running agent's descriptors, resident memory and goroutines.
func (s *soak) sample() {
	for _, name := range []string{"h1", "h2", "h3", "h4", "h5", "h6"} {
		h := s.hosts[name]
		a := s.agent(h)
		if a.Exited() {
			continue
		}
		pid := a.Pid()
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue
		}
		smp := soakSample{At: time.Now(), Pid: pid, FDs: len(fds), RSS: rssBytes(pid), Goroutines: -1}
		if code, body, err := h.Get("http://127.0.0.1:15020/metrics"); err == nil && code == 200 {
			for _, line := range strings.Split(body, "\n") {
				if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
					if n, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
						smp.Goroutines = int(n)
					}
				}
			}
		}
		s.mu.Lock()
		s.samples[name] = append(s.samples[name], smp)
		s.mu.Unlock()
	}
}

func rssBytes(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

// slope is the least-squares growth per minute of y over the samples' times.
func slope(at []time.Time, y []float64) float64 {
	n := float64(len(at))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range at {
		x := at[i].Sub(at[0]).Minutes()
		sx, sy, sxx, sxy = sx+x, sy+y[i], sxx+x*x, sxy+x*y[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// Leak bounds: a process whose second half of life (at least soakLeakSpan of samples) grows faster than these per
// minute leaks. Steady traffic keeps an agent's goroutines and descriptors level; the broken test builds grow by
// hundreds a minute.
const (
	soakLeakSpan       = 50 * time.Second
	soakGoroutineSlope = 60.0 // per minute
	soakFDSlope        = 30.0 // per minute
	soakRSSSlope       = 16.0 // MiB per minute
)

// soakGrowth is one agent process's growth over the second half of its samples.
type soakGrowth struct {
	Host       string        `json:"host"`
	Pid        int           `json:"pid"`
	Span       time.Duration `json:"span"`
	Goroutines float64       `json:"goroutines_per_min"`
	FDs        float64       `json:"fds_per_min"`
	RSSMiB     float64       `json:"rss_mib_per_min"`
}

func (s *soak) growth() []soakGrowth {
	var out []soakGrowth
	for host, samples := range s.samples {
		byPid := map[int][]soakSample{}
		for _, smp := range samples {
			byPid[smp.Pid] = append(byPid[smp.Pid], smp)
		}
		for pid, ss := range byPid {
			ss = ss[len(ss)/2:]
			if len(ss) < 4 || ss[len(ss)-1].At.Sub(ss[0].At) < soakLeakSpan {
				continue
			}
			var at []time.Time
			var g, fd, rss []float64
			for _, smp := range ss {
				if smp.Goroutines < 0 {
					continue
				}
				at = append(at, smp.At)
				g, fd, rss = append(g, float64(smp.Goroutines)), append(fd, float64(smp.FDs)), append(rss, float64(smp.RSS)/(1<<20))
			}
			if len(at) < 4 {
				continue
			}
			out = append(out, soakGrowth{Host: host, Pid: pid, Span: at[len(at)-1].Sub(at[0]).Round(time.Second),
				Goroutines: slope(at, g), FDs: slope(at, fd), RSSMiB: slope(at, rss)})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Host < out[j].Host || out[i].Host == out[j].Host && out[i].Pid < out[j].Pid
	})
	return out
}

// soakReport is what `make soak` prints and writes.
type soakReport struct {
	Seed           uint64        `json:"seed"`
	Duration       time.Duration `json:"duration"`
	Flows          []*soakFlow   `json:"flows"`
	Faults         []*soakFault  `json:"faults"`
	Growth         []soakGrowth  `json:"growth"`
	PlaintextBytes int64         `json:"plaintext_bytes"`
	PlaintextSeen  []string      `json:"plaintext_packets,omitempty"`
	// PlaintextOutOfMesh are plaintext bytes to or from a host while it was out of the mesh (a graceful stop).
	PlaintextOutOfMesh int64    `json:"plaintext_bytes_out_of_mesh"`
	Problems           []string `json:"problems"`
	// Samples are every agent's descriptors, memory and goroutines every 10 s, by host.
	Samples map[string][]soakSample `json:"samples"`
}

// run carries traffic for d, injecting faults when faults is set, and reports.
func (s *soak) run(d time.Duration, faults bool) *soakReport {
	client, multi := s.hosts["h1"], s.hosts["h6"]
	// Captured traffic goes out as HBONE (port 15008): any payload to or from the application ports on the
	// clients' links is plaintext that should not be there.
	const payload = "tcp portrange 9000-9001 and (((ip[2:2] - ((ip[0]&0xf)<<2)) - ((tcp[12]&0xf0)>>2)) != 0)"
	stopClient := s.l.CaptureFiltered("soak-h1", client, payload)
	stopMulti := s.l.CaptureFiltered("soak-h6", multi, payload)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	s.startTraffic(ctx, &wg)
	start := time.Now()
	end := start.Add(d)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for time.Now().Before(end) {
			s.sample()
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Second):
			}
		}
	}()
	rng := mrand.New(mrand.NewPCG(s.seed, s.seed^0x9e3779b97f4a7c15))
	injectors := s.injectors()
	total := 0
	for _, in := range injectors {
		total += in.weight
	}
	// Faults until 30 s before the end: the last stretch shows that everything recovered.
	for faults && time.Until(end) > 30*time.Second {
		time.Sleep(time.Duration(3+rng.IntN(8)) * time.Second)
		if time.Until(end) < 30*time.Second {
			break
		}
		n := rng.IntN(total)
		var in soakInjector
		for _, in = range injectors {
			if n -= in.weight; n < 0 {
				break
			}
		}
		f := in.inject(rng)
		s.t.Logf("soak: %s  %s .. %s%s", f.Name, f.Start.Format("15:04:05.000"), f.End.Format("15:04:05.000"), map[bool]string{true: "  ERROR " + f.Err, false: ""}[f.Err != ""])
		s.mu.Lock()
		s.faults = append(s.faults, f)
		s.mu.Unlock()
	}
	time.Sleep(time.Until(end))
	cancel()
	wg.Wait()
	<-sampled
	s.sample()

	rep := &soakReport{Seed: s.seed, Duration: d, Flows: s.flows, Faults: s.faults, Growth: s.growth(), Samples: s.samples}
	for _, stop := range []func() string{stopClient, stopMulti} {
		out, err := s.l.Switch().Run(lab.Timeout(time.Minute), "tcpdump", "-r", stop(), "-n", "-q", "-tt")
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("reading the capture: %v", err))
		}
		// A connection is judged by its first plaintext segment: one begun while a host of it was out of the
		// mesh stays plaintext for its life (a connection is never moved into a tunnel once established).
		outside := map[[2]string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line) // "<unix time> IP <src>.<port> > <dst>.<port>: tcp <payload length>"
			if len(f) < 7 || f[len(f)-2] != "tcp" {
				continue
			}
			n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
			if err != nil || n == 0 {
				continue
			}
			src, dst := f[2], strings.TrimSuffix(f[4], ":")
			conn := [2]string{min(src, dst), max(src, dst)}
			wasOut, seen := outside[conn]
			if !seen {
				wasOut = s.outOfMesh(rep.Faults, f[0], src, dst)
				outside[conn] = wasOut
			}
			if wasOut {
				rep.PlaintextOutOfMesh += n
				continue
			}
			rep.PlaintextBytes += n
			if len(rep.PlaintextSeen) < 10 {
				rep.PlaintextSeen = append(rep.PlaintextSeen, line)
			}
		}
	}
	s.judge(rep)
	return rep
}

// outOfMesh reports whether a packet at unix time ts between src and dst ("ip.port") touched a host while a fault
// had it out of the mesh.
func (s *soak) outOfMesh(faults []*soakFault, ts, src, dst string) bool {
	sec, err := strconv.ParseFloat(ts, 64)
	if err != nil {
		return false
	}
	at := time.Unix(0, int64(sec*1e9))
	ip := func(a string) string { return a[:max(strings.LastIndexByte(a, '.'), 0)] }
	for _, f := range faults {
		if !f.OutOfMesh || at.Before(f.Start) || at.After(f.End.Add(5*time.Second)) {
			continue
		}
		for _, name := range f.Hosts {
			if h := s.hosts[name]; h != nil && (h.Addr.String() == ip(src) || h.Addr.String() == ip(dst)) {
				return true
			}
		}
	}
	return false
}

// judge attributes every failure to a fault, or leaves it unexplained, and lists the problems.
func (s *soak) judge(rep *soakReport) {
	for _, f := range rep.Faults {
		if f.Err != "" {
			rep.Problems = append(rep.Problems, fmt.Sprintf("fault %q: %s", f.Name, f.Err))
		}
	}
	for _, fl := range rep.Flows {
		fl.mu.Lock()
		for i := range fl.Failures {
			x := &fl.Failures[i]
			if strings.HasPrefix(x.Err, "CORRUPTED") {
				rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %s at %s", fl.Name, x.Err, x.From.Format("15:04:05.000")))
			}
			if x.Fault != "" {
				continue
			}
			for _, f := range rep.Faults {
				if f.Bound > 0 && crosses(fl.Hosts, f.Hosts) && !x.To.Before(f.Start) && !x.From.After(f.End.Add(f.Bound)) {
					x.Fault = f.Name
					break
				}
			}
			if x.Fault == "" {
				rep.Problems = append(rep.Problems, fmt.Sprintf("unexplained failure of %s at %s..%s: %s", fl.Name,
					x.From.Format("15:04:05.000"), x.To.Format("15:04:05.000"), x.Err))
			}
		}
		// Denied means denied: once every echo host has the DENY (a second later, for connections in flight), no
		// exchange of the identity succeeds until it is lifted.
		for _, w := range fl.denied {
			for _, ok := range fl.successes {
				if ok.from.After(w.from.Add(time.Second)) && ok.to.Before(w.to) {
					rep.Problems = append(rep.Problems, fmt.Sprintf("policy violation: %s succeeded at %s while denied (%s..%s)", fl.Name,
						ok.from.Format("15:04:05.000"), w.from.Format("15:04:05.000"), w.to.Format("15:04:05.000")))
				}
			}
		}
		fl.mu.Unlock()
		if fl.OK == 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: no exchange succeeded", fl.Name))
		}
	}
	if rep.PlaintextBytes > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d plaintext bytes of captured traffic on the clients' links, e.g. %v", rep.PlaintextBytes, rep.PlaintextSeen))
	}
	for _, g := range rep.Growth {
		if g.Goroutines > soakGoroutineSlope || g.FDs > soakFDSlope || g.RSSMiB > soakRSSSlope {
			rep.Problems = append(rep.Problems, fmt.Sprintf("leak: the agent on %s (pid %d) grows by %.0f goroutines, %.0f descriptors and %.1f MiB a minute over %s",
				g.Host, g.Pid, g.Goroutines, g.FDs, g.RSSMiB, g.Span))
		}
	}
}

func crosses(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

// table is the report as docs/reliability.md shows it.
func (rep *soakReport) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %s\n\n", rep.Seed, rep.Duration)
	b.WriteString("| traffic | attempted | succeeded | failed | explained by a fault | bytes verified |\n|---|---|---|---|---|---|\n")
	for _, fl := range rep.Flows {
		explained := 0
		for _, x := range fl.Failures {
			if x.Fault != "" {
				explained++
			}
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d |\n", fl.Name, fl.Attempts, fl.OK, len(fl.Failures), explained, fl.Bytes)
	}
	b.WriteString("\n| fault | start | lasted | failures it explains | bound after it | converged after |\n|---|---|---|---|---|---|\n")
	start := time.Time{}
	if len(rep.Faults) > 0 {
		start = rep.Faults[0].Start
	}
	for _, f := range rep.Faults {
		n := 0
		for _, fl := range rep.Flows {
			for _, x := range fl.Failures {
				if x.Fault == f.Name || strings.HasPrefix(x.Fault, f.Name+" (") {
					n++
				}
			}
		}
		conv := "-"
		if f.Converged > 0 {
			conv = f.Converged.Round(100 * time.Millisecond).String()
		}
		fmt.Fprintf(&b, "| %s | +%s | %s | %d | %s | %s |\n", f.Name, f.Start.Sub(start).Round(time.Second), f.End.Sub(f.Start).Round(100*time.Millisecond), n, f.Bound, conv)
	}
	b.WriteString("\n| agent | pid | span | goroutines/min | descriptors/min | RSS MiB/min |\n|---|---|---|---|---|---|\n")
	for _, g := range rep.Growth {
		fmt.Fprintf(&b, "| %s | %d | %s | %.1f | %.1f | %.2f |\n", g.Host, g.Pid, g.Span, g.Goroutines, g.FDs, g.RSSMiB)
	}
	fmt.Fprintf(&b, "\nplaintext bytes of captured traffic on the wire: %d (and %d to or from a host while it was out of the mesh)\n",
		rep.PlaintextBytes, rep.PlaintextOutOfMesh)
	if len(rep.Problems) == 0 {
		b.WriteString("problems: none\n")
	} else {
		fmt.Fprintf(&b, "problems: %d\n", len(rep.Problems))
		for _, p := range rep.Problems {
			fmt.Fprintf(&b, "- %s\n", p)
		}
	}
	return b.String()
}

// publish logs the table and writes the report, JSON and table, to SOAK_REPORT (a path without extension;
// default: the test's temporary directory).
func (s *soak) publish(rep *soakReport) {
	table := rep.table()
	s.t.Log("\n" + table)
	base := os.Getenv("SOAK_REPORT")
	if base == "" {
		base = filepath.Join(s.t.TempDir(), "soak")
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		s.t.Errorf("soak report: %v", err)
		return
	}
	if err := os.WriteFile(base+".json", js, 0o644); err != nil {
		s.t.Errorf("soak report: %v", err)
	}
	if err := os.WriteFile(base+".md", []byte(table), 0o644); err != nil {
		s.t.Errorf("soak report: %v", err)
	}
	s.t.Logf("soak report: %s.json, %s.md", base, base)
}

// The soak can fail: agents built to leak a goroutine per connection, or to send one byte of each connection in
// plaintext first, make it report the leak and the plaintext (short runs without faults, side by side).
func TestSoakCatchesBrokenAgents(t *testing.T) {
	for _, tc := range []struct {
		tag, want string
		d         time.Duration
	}{
		{"soakbroken_leak", "leak: the agent on h1", 150 * time.Second},
		{"soakbroken_plaintext", "plaintext bytes of captured traffic", time.Minute},
	} {
		t.Run(tc.tag, func(t *testing.T) {
			t.Parallel()
			bin, err := lab.BuildAgentWithTags(scratch, tc.tag)
			if err != nil {
				t.Fatal(err)
			}
			s := newSoak(t, bin, 1)
			rep := s.run(tc.d, false)
			t.Log("\n" + rep.table())
			if !slices.ContainsFunc(rep.Problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("the soak of an agent built with %s did not report %q; problems: %q", tc.tag, tc.want, rep.Problems)
			}
		})
	}
}
