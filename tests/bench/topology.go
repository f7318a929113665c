package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// path is one of the three ways traffic goes from a client host to a server host.
type path int

const (
	direct path = iota // no agent
	meshed             // both hosts captured by the agent: HBONE
	peer               // Istio's Go HBONE client and server
)

func (p path) String() string { return [...]string{"direct", "meshed", "peer"}[p] }

// Ports on the server hosts.
const (
	iperfPort  = 5201
	echoPort   = 7000
	peerListen = "127.0.0.1:15101" // the peer client, where nftables redirects h5's traffic
	hbonePort  = 15008
)

// topology is the running lab: a client and a server host per path.
type topology struct {
	lab            *lab.Lab
	bins           binaries
	client, server [3]*lab.Host
	agents         [2]*lab.Agent // meshed client, meshed server
	peerClient     *lab.Proc
}

func setUp(t lab.T, bins binaries) *topology {
	t.Helper()
	lab.Require(t, "iperf3", "nft", "ss")
	l := lab.New(t, 6)
	tp := &topology{lab: l, bins: bins}
	for p := direct; p <= peer; p++ {
		// meshed h1->h2, direct h3->h4, peer h5->h6
		i := map[path]int{meshed: 0, direct: 2, peer: 4}[p]
		tp.client[p], tp.server[p] = l.Hosts[i], l.Hosts[i+1]
	}
	for _, h := range l.Hosts {
		tuneHost(t, h)
	}
	for p := direct; p <= peer; p++ {
		s := tp.server[p]
		s.Start("iperf3", "iperf3", "-s", "-p", fmt.Sprint(iperfPort))
		s.Start("echo", bins.loadgen, "serve", "-listen", fmt.Sprintf(":%d", echoPort))
		s.WaitListening(iperfPort, 10*time.Second)
		s.WaitListening(echoPort, 10*time.Second)
	}

	c, s := tp.client[meshed], tp.server[meshed]
	c.Issue(bins.agent, "default", "default")
	s.Issue(bins.agent, "default", "default")
	tp.agents[0] = c.StartAgent(bins.agent, agentConfig(c, s))
	tp.agents[1] = s.StartAgent(bins.agent, agentConfig(s, c))
	for _, a := range tp.agents {
		a.WaitReady(t, 20*time.Second)
	}

	c, s = tp.client[peer], tp.server[peer]
	c.Issue(bins.agent, "default", "default")
	s.Issue(bins.agent, "default", "default")
	s.Start("hbonepeer", bins.peer, "server", "-listen", fmt.Sprintf(":%d", hbonePort), "-identity", s.IdentityDir())
	s.WaitListening(hbonePort, 10*time.Second)
	tp.peerClient = c.Start("hbonepeer", bins.peer, "client", "-listen", peerListen,
		"-gateway", fmt.Sprintf("%s:%d", s.Addr, hbonePort), "-identity", c.IdentityDir())
	c.WaitListening(15101, 10*time.Second)
	redirect := fmt.Sprintf(`table ip bench_peer {
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr %s tcp dport { %d, %d } redirect to :15101
  }
}
`, s.Addr, iperfPort, echoPort)
	rules := filepath.Join(c.Dir, "peer.nft")
	if err := os.WriteFile(rules, []byte(redirect), 0o644); err != nil {
		t.Fatal(err)
	}
	c.MustRun("nft", "-f", rules)
	tp.check(t)
	return tp
}

// tuneHost lets a client open and close tens of thousands of connections in a few minutes: a wide ephemeral
// port range and reuse of TIME_WAIT ports (both per network namespace).
func tuneHost(t lab.T, h *lab.Host) {
	t.Helper()
	h.MustRun("sh", "-c", `echo "1024 65000" > /proc/sys/net/ipv4/ip_local_port_range && echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse`)
}

// agentConfig is a captured host whose peer is declared statically as a captured (HBONE) remote workload.
func agentConfig(h, peer *lab.Host) string {
	return fmt.Sprintf(`[node]
name = %q
drain_timeout = "2s"
[identity]
dir = %q
[[workload]]
name = "app-%s"
addresses = [%q]
[[remote_workload]]
name = "app-%s"
addresses = [%q]
node = %q
`, h.Name, h.IdentityDir(), h.Name, h.Addr, peer.Name, peer.Addr, peer.Name)
}

// check proves each path is what it claims: one exchange works, the meshed one is carried by both agents in
// HBONE and the peer one by Istio's code.
func (tp *topology) check(t lab.T) {
	t.Helper()
	for p := direct; p <= peer; p++ {
		if _, err := tp.loadgen(p, 10*time.Second, "probe"); err != nil {
			t.Fatalf("%s path does not work: %v", p, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		okC := strings.Contains(tp.agents[0].Log(), "route=hbone")
		okS := strings.Contains(tp.agents[1].Log(), "direction=inbound ")
		okP := strings.Contains(tp.peerClient.Log(), "first tunnel")
		if okC && okS && okP {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a path is not what it should be (client agent carried HBONE: %v, server agent received it: %v, "+
				"peer carried it: %v)\nclient agent:\n%s\nserver agent:\n%s\npeer:\n%s", okC, okS, okP,
				tp.agents[0].Log(), tp.agents[1].Log(), tp.peerClient.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loadgen runs a loadgen mode from p's client host against p's echo server and returns its JSON output.
func (tp *topology) loadgen(p path, timeout time.Duration, mode string, args ...string) ([]byte, error) {
	target := fmt.Sprintf("%s:%d", tp.server[p].Addr, echoPort)
	args = append([]string{mode, "-target", target}, args...)
	return output(tp.client[p], timeout, tp.bins.loadgen, args...)
}

// output runs a command in h and returns its standard output; on failure the error carries standard error.
func output(h *lab.Host, timeout time.Duration, name string, args ...string) ([]byte, error) {
	cmd := h.Command(lab.Timeout(timeout), name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s on %s: %w: %s%s", name, strings.Join(args, " "), h.Name, err,
			strings.TrimSpace(stderr.String()), strings.TrimSpace(string(out)))
	}
	return out, nil
}
