package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// path is one way traffic goes from a client host to a server host. Each path has its own pair of lab hosts on
// the same bridge, so every path crosses the same veth/bridge/veth as the others.
type path int

const (
	direct  path = iota // h1 -> h2: no agent, the baseline of every ratio
	meshed              // h3 -> h4: both hosts captured by the agent, HBONE
	peer                // h5 -> h6: Istio's Go HBONE client and server (tests/bench/peer)
	stunnel             // h7 -> h8: a plain TLS 1.3 tunnel made by stunnel4 (C, OpenSSL): what TLS alone costs here
	compare             // h9 -> h10: like meshed, with the agent of Options.Compare (only with -compare)
)

func (p path) String() string {
	return [...]string{"direct", "meshed", "peer", "stunnel", "compare"}[p]
}

// redirected paths take the client's traffic to the server's ports through a local listener (nftables redirect).
var redirectTo = map[path]string{peer: "127.0.0.1:15101", stunnel: "127.0.0.1:15102"}

// Ports on the server hosts.
const (
	iperfPort   = 5201
	echoPort    = 7000
	hbonePort   = 15008
	stunnelPort = 15443
)

// topology is the running lab.
type topology struct {
	lab            *lab.Lab
	bins           binaries
	paths          []path
	client, server map[path]*lab.Host
	agents         map[path][2]*lab.Agent // meshed and compare: client and server agents
	tunnel         map[path]*lab.Proc     // peer and stunnel: the client-side process
	peerServer     *lab.Proc              // the peer's server-side process
}

func setUp(t lab.T, bins binaries) *topology {
	t.Helper()
	tp := &topology{bins: bins, paths: []path{direct, meshed, peer, stunnel},
		client: map[path]*lab.Host{}, server: map[path]*lab.Host{},
		agents: map[path][2]*lab.Agent{}, tunnel: map[path]*lab.Proc{}}
	if bins.compare != "" {
		tp.paths = append(tp.paths, compare)
	}
	l := lab.New(t, 2*len(tp.paths))
	tp.lab = l
	for i, p := range tp.paths {
		tp.client[p], tp.server[p] = l.Hosts[2*i], l.Hosts[2*i+1]
	}
	for _, h := range l.Hosts {
		tuneHost(t, h)
	}
	for _, p := range tp.paths {
		s := tp.server[p]
		s.Start("iperf3", "iperf3", "-s", "-p", fmt.Sprint(iperfPort))
		s.Start("echo", bins.loadgen, "serve", "-listen", fmt.Sprintf(":%d", echoPort))
		s.WaitListening(iperfPort, 10*time.Second)
		s.WaitListening(echoPort, 10*time.Second)
		tp.client[p].Issue(bins.agent, "default", "default")
		s.Issue(bins.agent, "default", "default")
	}
	for p, bin := range map[path]string{meshed: bins.agent, compare: bins.compare} {
		if bin == "" {
			continue
		}
		c, s := tp.client[p], tp.server[p]
		a := [2]*lab.Agent{c.StartAgent(bin, agentConfig(c, s)), s.StartAgent(bin, agentConfig(s, c))}
		for _, x := range a {
			x.WaitReady(t, 20*time.Second)
		}
		tp.agents[p] = a
	}
	tp.startPeer(t)
	tp.startStunnel(t)
	tp.check(t)
	return tp
}

// startPeer runs Istio's HBONE server on h6 and its client on h5.
func (tp *topology) startPeer(t lab.T) {
	t.Helper()
	c, s := tp.client[peer], tp.server[peer]
	tp.peerServer = s.Start("hbonepeer", tp.bins.peer, "server", "-listen", fmt.Sprintf(":%d", hbonePort), "-identity", s.IdentityDir())
	s.WaitListening(hbonePort, 10*time.Second)
	tp.tunnel[peer] = c.Start("hbonepeer", tp.bins.peer, "client", "-listen", redirectTo[peer],
		"-gateway", fmt.Sprintf("%s:%d", s.Addr, hbonePort), "-identity", c.IdentityDir())
	tp.redirect(t, peer)
}

// startStunnel runs a mutual-TLS 1.3 tunnel with stunnel4 from h7 to h8, with the same certificates.
func (tp *topology) startStunnel(t lab.T) {
	t.Helper()
	c, s := tp.client[stunnel], tp.server[stunnel]
	conf := func(h *lab.Host, service string) string {
		id := h.IdentityDir()
		path := filepath.Join(h.Dir, "stunnel.conf")
		text := fmt.Sprintf("foreground = yes\npid =\ndebug = 5\n[bench]\nsslVersionMin = TLSv1.3\n"+
			"cert = %s\nkey = %s\nCAfile = %s\nverifyChain = yes\n%s",
			filepath.Join(id, "default", "default", "cert-chain.pem"), filepath.Join(id, "default", "default", "key.pem"),
			filepath.Join(id, "root-cert.pem"), service)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	s.Start("stunnel", "stunnel4", conf(s, fmt.Sprintf("accept = %d\nconnect = %s:%d\n", stunnelPort, s.Addr, iperfPort)))
	s.WaitListening(stunnelPort, 10*time.Second)
	tp.tunnel[stunnel] = c.Start("stunnel", "stunnel4",
		conf(c, fmt.Sprintf("client = yes\naccept = %s\nconnect = %s:%d\n", redirectTo[stunnel], s.Addr, stunnelPort)))
	tp.redirect(t, stunnel)
}

// redirect sends p's client traffic to the server's benchmark ports into the local tunnel listener, as the
// agent's capture does.
func (tp *topology) redirect(t lab.T, p path) {
	t.Helper()
	c, s := tp.client[p], tp.server[p]
	_, port, _ := strings.Cut(redirectTo[p], ":")
	var portNum int
	fmt.Sscan(port, &portNum)
	c.WaitListening(portNum, 10*time.Second)
	rules := fmt.Sprintf(`table ip bench_redirect {
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr %s tcp dport { %d, %d } redirect to :%s
  }
}
`, s.Addr, iperfPort, echoPort, port)
	file := filepath.Join(c.Dir, "redirect.nft")
	if err := os.WriteFile(file, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	c.MustRun("nft", "-f", file)
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

// check proves each path is what it claims: one exchange works (the echo server is reached through the tunnel
// on the tunnel paths), the meshed ones are carried by both agents in HBONE and the peer by Istio's code.
func (tp *topology) check(t lab.T) {
	t.Helper()
	for _, p := range tp.paths {
		if p == stunnel {
			continue // it carries only iperf3's port; checked by its log below
		}
		if _, err := tp.loadgen(p, 10*time.Second, "probe"); err != nil {
			t.Fatalf("%s path does not work: %v", p, err)
		}
	}
	if _, err := tp.iperf(stunnel, 1, plan{iperfSeconds: 1}); err != nil {
		t.Fatalf("stunnel path does not work: %v\n%s", err, tp.tunnel[stunnel].Log())
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var missing []string
		for p, a := range tp.agents {
			if !strings.Contains(a[0].Log(), "route=hbone") || !strings.Contains(a[1].Log(), "direction=inbound ") {
				missing = append(missing, fmt.Sprintf("%s: the agents did not carry it in HBONE\nclient agent:\n%s\nserver agent:\n%s",
					p, a[0].Log(), a[1].Log()))
			}
		}
		if !strings.Contains(tp.tunnel[peer].Log(), "first tunnel") {
			missing = append(missing, "peer: Istio's client did not carry it:\n"+tp.tunnel[peer].Log())
		}
		if !strings.Contains(tp.tunnel[stunnel].Log(), "accepted connection") {
			missing = append(missing, "stunnel: the client did not carry it:\n"+tp.tunnel[stunnel].Log())
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a path is not what it should be:\n%s", strings.Join(missing, "\n"))
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
