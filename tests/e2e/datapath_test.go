package e2e

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

const marker = "ambient-marker-7f3a9c"

// datapathLab: A and B captured with agents, C uncaptured (no agent).
type datapathLab struct {
	*lab.Lab
	a, b, c      *lab.Host
	agentA       *lab.Agent
	agentB       *lab.Agent
	filterBefore string
	// routingBefore is B's policy rules and return-path routes before its agent started.
	routingBefore string
}

func newDatapathLab(t *testing.T) *datapathLab {
	lab.Require(t, "nginx", "curl", "tcpdump", "nft", "ss", "socat", "nc")
	l := lab.New(t, 3)
	d := &datapathLab{Lab: l, a: l.Hosts[0], b: l.Hosts[1], c: l.Hosts[2]}
	// A firewall table of the host's own on B, which the agent must not touch.
	d.b.MustRun("nft", "add", "table", "inet", "filter")
	d.b.MustRun("nft", "add", "chain", "inet", "filter", "input", "{ type filter hook input priority 0; policy accept; }")
	d.b.MustRun("nft", "add", "rule", "inet", "filter", "input", "tcp", "dport", "9999", "counter", "drop")
	d.filterBefore = d.b.MustRun("nft", "list", "table", "inet", "filter")
	d.routingBefore = routing(d.b)

	d.b.StartNginx(marker, 8080, 22)
	d.c.StartNginx("c-"+marker, 8080)
	for _, h := range []*lab.Host{d.a, d.b} {
		h.Issue(agentBin, "default", "default")
	}
	d.agentA = d.a.StartAgent(agentBin, meshConfig(d.a, d.b).String())
	d.agentB = d.b.StartAgent(agentBin, meshConfig(d.b, d.a).String())
	d.agentA.WaitReady(t, 15*time.Second)
	d.agentB.WaitReady(t, 15*time.Second)
	return d
}

func curl(h *lab.Host, url string) (string, error) {
	ctx := lab.Timeout(10 * time.Second)
	return h.Run(ctx, "curl", "-sS", "--max-time", "5", url)
}

// The filter table of the host's own is exactly as before.
func (d *datapathLab) checkFilterUntouched(t *testing.T, when string) {
	t.Helper()
	if now := d.b.MustRun("nft", "list", "table", "inet", "filter"); now != d.filterBefore {
		t.Errorf("inet filter changed %s:\nbefore:\n%s\nafter:\n%s", when, d.filterBefore, now)
	}
}

// accessLog returns h's nginx access log once ok holds of it, or after 2 s:
// nginx writes a request's line just after sending the response, which a
// direct curl may have received, and returned, first.
func accessLog(h *lab.Host, ok func([]string) bool) []string {
	log := h.NginxAccessLog()
	for deadline := time.Now().Add(2 * time.Second); !ok(log) && time.Now().Before(deadline); log = h.NginxAccessLog() {
		time.Sleep(20 * time.Millisecond)
	}
	return log
}

func hasLine(line string) func([]string) bool {
	return func(log []string) bool { return slices.Contains(log, line) }
}

func hasZoneTable(h *lab.Host) bool {
	_, err := h.Run(lab.Timeout(10*time.Second), "nft", "list", "table", "inet", "ambient_agent_zone")
	return err == nil
}

func hasTable(h *lab.Host) bool {
	_, err := h.Run(lab.Timeout(10*time.Second), "nft", "list", "table", "inet", "ambient_agent")
	return err == nil
}

// An uncaptured host reaches a captured one in plaintext through its 15006;
// the application sees the agent's connection, the agent logs it.
func TestPlaintextInboundFromUncapturedHost(t *testing.T) {
	d := newDatapathLab(t)
	out, err := curl(d.c, fmt.Sprintf("http://%s:8080/", d.b.Addr))
	if err != nil || !strings.Contains(out, marker) {
		t.Fatalf("C -> B:8080: %v %q", err, out)
	}
	d.agentB.WaitLog(t, "direction=inbound_plaintext", 5*time.Second)
	if n := strings.Count(d.agentB.Log(), "msg=access"); n != 1 {
		t.Errorf("%d access-log lines for one connection:\n%s", n, d.agentB.Log())
	}
	// Through the agent, from C's address ([capture] original_source): nginx sees the real client.
	if log := accessLog(d.b, hasLine(fmt.Sprintf("%s 8080", d.c.Addr))); !slices.Contains(log, fmt.Sprintf("%s 8080", d.c.Addr)) {
		t.Errorf("nginx on B did not see C as the client: %v", log)
	}
}

// An excluded port (22) is reached directly, not through the agent.
func TestExcludedPortIsNotCaptured(t *testing.T) {
	d := newDatapathLab(t)
	out, err := curl(d.c, fmt.Sprintf("http://%s:22/", d.b.Addr))
	if err != nil || !strings.Contains(out, marker) {
		t.Fatalf("C -> B:22: %v %q", err, out)
	}
	if log := accessLog(d.b, hasLine(fmt.Sprintf("%s 22", d.c.Addr))); !slices.Contains(log, fmt.Sprintf("%s 22", d.c.Addr)) {
		t.Errorf("port 22 was not reached directly from C: %v", log)
	}
	// Nothing else connects to B in this test: any access line is port 22's.
	// (Not a search for ":22", which the log's timestamps contain one minute in sixty.)
	if strings.Contains(d.agentB.Log(), "msg=access") {
		t.Errorf("B's agent handled a connection, expected none:\n%s", d.agentB.Log())
	}
}

// A destination outside the mesh passes through unchanged.
func TestPassthroughToUnknownDestination(t *testing.T) {
	d := newDatapathLab(t)
	out, err := curl(d.a, fmt.Sprintf("http://%s:8080/", d.c.Addr))
	if err != nil || !strings.Contains(out, "c-"+marker) {
		t.Fatalf("A -> C:8080: %v %q", err, out)
	}
	if log := accessLog(d.c, hasLine(fmt.Sprintf("%s 8080", d.a.Addr))); !slices.Contains(log, fmt.Sprintf("%s 8080", d.a.Addr)) {
		t.Errorf("C did not see A as the client: %v", log)
	}
}

// Stop removes the table and the return path's rules and routes; kill -9 leaves
// them and captured traffic fails closed; a restart restores service, with the
// host's own traffic unaffected; cleanup after kill -9 restores the host, nft
// ruleset and routing byte for byte.
func TestCaptureFailsClosedAndCleansUp(t *testing.T) {
	d := newDatapathLab(t)
	url := fmt.Sprintf("http://%s:8080/", d.b.Addr)
	rulesetBefore := "" // B's ruleset before any agent: the filter table alone
	if !hasTable(d.b) {
		t.Fatal("B's agent is ready but its table is missing")
	}
	if err := d.agentB.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.agentB.WaitLog(t, "configuration reloaded", 5*time.Second)
	d.checkFilterUntouched(t, "by start and reload")

	// Graceful stop removes the table.
	if err := d.agentB.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, ok := d.agentB.Wait(10 * time.Second); !ok || code != 0 {
		t.Fatalf("B's agent: exit %d (exited %v)", code, ok)
	}
	if hasTable(d.b) {
		t.Fatal("table left after a graceful stop")
	}
	d.checkFilterUntouched(t, "by stop")
	d.checkRoutingRestored(t, "by stop")
	rulesetBefore = d.b.MustRun("nft", "list", "ruleset")

	// kill -9: the rules stay and captured connections fail closed.
	agent := d.b.StartAgent(agentBin, meshConfig(d.b, d.a).String())
	agent.WaitReady(t, 15*time.Second)
	if out, err := curl(d.c, url); err != nil || !strings.Contains(out, marker) {
		t.Fatalf("C -> B after restart: %v %q", err, out)
	}
	if err := agent.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	agent.Wait(5 * time.Second)
	if !hasTable(d.b) {
		t.Fatal("kill -9 removed the table?")
	}
	if hasZoneTable(d.b) {
		t.Error("the zone table outlived the agent's kill -9 (the kernel deletes it with its owner)")
	}
	seen := len(d.b.NginxAccessLog())
	if out, err := curl(d.c, url); err == nil {
		t.Fatalf("C -> B with the agent dead succeeded: %q", out)
	}
	if got := len(d.b.NginxAccessLog()); got != seen {
		t.Fatalf("a request reached B's application while its agent was dead")
	}

	// A restart restores service, and installs the return path once more over
	// what kill -9 left: the same rules and routes, not twice.
	running := routing(d.b)
	agent = d.b.StartAgent(agentBin, meshConfig(d.b, d.a).String())
	agent.WaitReady(t, 15*time.Second)
	if out, err := curl(d.c, url); err != nil || !strings.Contains(out, marker) {
		t.Fatalf("C -> B after restart: %v %q", err, out)
	}
	if now := routing(d.b); now != running || now == d.routingBefore {
		t.Errorf("B's routing after a restart over kill -9:\n%s\nwant, as before the kill:\n%s", now, running)
	}
	// The host's own traffic meets none of it: ssh (port 22, uncaptured) from C
	// sees C, and B's resolver exchange with C (UDP 53) is answered.
	if out, err := curl(d.c, fmt.Sprintf("http://%s:22/", d.b.Addr)); err != nil || !strings.Contains(out, marker) {
		t.Errorf("C -> B:22 with the return path in place: %v %q", err, out)
	}
	if log := accessLog(d.b, hasLine(fmt.Sprintf("%s 22", d.c.Addr))); !slices.Contains(log, fmt.Sprintf("%s 22", d.c.Addr)) {
		t.Errorf("B's port 22 did not see C as the client: %v", log)
	}
	d.c.Start("resolver", "socat", "UDP4-RECVFROM:53,fork", "SYSTEM:echo $SOCAT_PEERADDR")
	var answer string
	for try := 0; try < 5 && answer != d.b.Addr.String(); try++ { // until socat listens
		out, _ := d.b.Run(lab.Timeout(10*time.Second), "sh", "-c", fmt.Sprintf("echo query | nc -u -w 1 %s 53", d.c.Addr))
		answer = strings.TrimSpace(out)
	}
	if answer != d.b.Addr.String() {
		t.Errorf("B's UDP exchange with a resolver on C: answer %q, want %s", answer, d.b.Addr)
	}

	// kill -9 again, then cleanup: the host is as before the agent started.
	agent.Signal(syscall.SIGKILL)
	agent.Wait(5 * time.Second)
	d.b.MustRun(agentBin, "cleanup")
	if now := d.b.MustRun("nft", "list", "ruleset"); now != rulesetBefore {
		t.Errorf("ruleset after cleanup differs:\nbefore:\n%s\nafter:\n%s", rulesetBefore, now)
	}
	d.checkFilterUntouched(t, "by cleanup")
	d.checkRoutingRestored(t, "by cleanup")
	d.b.MustRun(agentBin, "cleanup") // idempotent
}

// checkRoutingRestored checks B's policy rules and return-path routes are exactly as before its agent started.
func (d *datapathLab) checkRoutingRestored(t *testing.T, when string) {
	t.Helper()
	if now := routing(d.b); now != d.routingBefore {
		t.Errorf("B's routing not restored %s:\nbefore:\n%s\nafter:\n%s", when, d.routingBefore, now)
	}
}

// A captured curl from A to B's server crosses the network only inside HBONE:
// the bridge sees TCP to 15008 only and never the request's marker.
func TestCapturedTrafficCrossesOnlyInHBONE(t *testing.T) {
	d := newDatapathLab(t)
	stop := d.Capture("hbone", d.a)
	url := fmt.Sprintf("http://%s:8080/%s", d.b.Addr, marker+"-request")
	out, err := curl(d.a, url)
	pcap := stop()
	if err != nil || !strings.Contains(out, marker) {
		t.Fatalf("A -> B:8080: %v %q\nA's agent:\n%s\nB's agent:\n%s", err, out, d.agentA.Log(), d.agentB.Log())
	}
	raw, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(marker)) {
		t.Fatalf("the marker crossed the bridge in plaintext")
	}
	summary := d.PcapSummary(pcap)
	ab := 0
	for _, line := range strings.Split(strings.TrimSpace(summary), "\n") {
		if !strings.Contains(line, d.a.Addr.String()) {
			continue
		}
		ab++
		if !strings.Contains(line, fmt.Sprintf("%s.15008", d.b.Addr)) {
			t.Errorf("traffic between A and B not on port 15008: %s", line)
		}
	}
	if ab == 0 {
		t.Fatalf("no packet between A and B captured:\n%s\nA:\n%s\nB:\n%s", summary, d.agentA.Log(), d.agentB.Log())
	}
	// Both agents carried it: A as the source, B as the destination over HBONE.
	d.agentA.WaitLog(t, "direction=outbound", 5*time.Second)
	d.agentB.WaitLog(t, "direction=inbound", 5*time.Second)
	if !strings.Contains(d.agentA.Log(), "route=hbone") || !strings.Contains(d.agentB.Log(), "src_identity=spiffe://cluster.local/ns/default/sa/default") {
		t.Errorf("access logs do not show the HBONE path:\nA:\n%s\nB:\n%s", d.agentA.Log(), d.agentB.Log())
	}
}

// A reload that adds a workload address applies at once, without a restart:
// before it, the new address of the host is captured but no workload's, so
// the agent refuses C; after it, C reaches the workload through the agent.
func TestReloadAddsWorkloadAddressLive(t *testing.T) {
	d := newDatapathLab(t)
	extra := "10.77.0.99"
	d.b.MustRun("ip", "addr", "add", extra+"/24", "dev", "eth0")
	url := fmt.Sprintf("http://%s:8080/", extra)
	if out, err := curl(d.c, url); err == nil {
		t.Fatalf("C -> B's new address before the reload, no workload's yet: %q, want refused", out)
	}
	if log := d.b.NginxAccessLog(); len(log) != 0 {
		t.Fatalf("before the reload nginx served %v, want nothing", log)
	}
	c := meshConfig(d.b, d.a)
	c.Workloads[0].Addresses = append(c.Workloads[0].Addresses, netip.MustParseAddr(extra))
	cfg := c.String()
	if err := os.WriteFile(d.agentB.ConfigPath, []byte(d.b.WithSocket(cfg)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.agentB.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.agentB.WaitLog(t, "capture rules updated", 5*time.Second)
	if strings.Contains(d.agentB.Log(), "take effect only after a restart") {
		t.Errorf("the new address was not applied live:\n%s", d.agentB.Log())
	}
	if out, err := curl(d.c, url); err != nil || !strings.Contains(out, marker) {
		t.Fatalf("C -> B's new address after the reload: %v %q", err, out)
	}
	d.agentB.WaitLog(t, "dst="+extra+":8080", 5*time.Second)
}

// meshConfig is the configuration of a captured host whose peers are declared
// statically as captured (HBONE) remote workloads.
func meshConfig(h *lab.Host, peers ...*lab.Host) lab.AgentConfig {
	c := lab.AgentConfig{Host: h, Workloads: []lab.Workload{h.App("")}}
	for _, p := range peers {
		c.Remote = append(c.Remote, p.RemoteApp(""))
	}
	return c
}

// The application sees the real client ([capture] original_source, the default): A's address for A's captured
// HBONE connection, C's for C's plaintext one, over IPv4 and IPv6, in nginx's $remote_addr and in a server that
// echoes getpeername(); nginx's allow and deny by client address then work as without the mesh (A allowed, C
// denied). Stopping the agent leaves no rule or route of the return path behind. With original_source = false the
// application sees B's own address, as before, and no rule or route is installed.
func TestApplicationSeesTheRealClient(t *testing.T) {
	lab.Require(t, "nginx", "curl", "nft", "ss", "socat", "nc")
	l := lab.New(t, 3)
	a, b, c := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	routingBefore := routing(b)
	b.StartNginxAllowing(marker, []netip.Addr{a.Addr, a.Addr6}, 8080)
	b.StartPeerEcho(9090)
	for _, h := range []*lab.Host{a, b} {
		h.Issue(agentBin, "default", "default")
	}
	dual := func(h *lab.Host, peer *lab.Host, tables string) string {
		cfg := meshConfig(h, peer)
		cfg.Workloads[0].Addresses = append(cfg.Workloads[0].Addresses, h.Addr6)
		cfg.Remote[0].Addresses = append(cfg.Remote[0].Addresses, peer.Addr6)
		cfg.Tables = tables
		return cfg.String()
	}
	agentA := a.StartAgent(agentBin, dual(a, b, ""))
	agentB := b.StartAgent(agentBin, dual(b, a, ""))
	agentA.WaitReady(t, 15*time.Second)
	agentB.WaitReady(t, 15*time.Second)
	for _, tc := range []struct {
		from       *lab.Host
		to, client string
	}{
		{a, b.Addr.String(), a.Addr.String()},
		{a, "[" + b.Addr6.String() + "]", a.Addr6.String()},
		{c, b.Addr.String(), c.Addr.String()},
		{c, "[" + b.Addr6.String() + "]", c.Addr6.String()},
	} {
		if out, err := curl(tc.from, "http://"+tc.to+":8080/"); err != nil || !strings.Contains(out, marker) {
			t.Fatalf("%s -> %s:8080: %v %q", tc.from.Name, tc.to, err, out)
		}
		want := tc.client + " 8080"
		if log := accessLog(b, hasLine(want)); !slices.Contains(log, want) {
			t.Errorf("%s -> %s: nginx saw the clients %v, want %s", tc.from.Name, tc.to, log, tc.client)
		}
		allowed, err := curl(tc.from, "http://"+tc.to+":8080/allowed")
		if want := map[bool]string{true: "Active connections", false: "403 Forbidden"}[tc.from == a]; err != nil || !strings.Contains(allowed, want) {
			t.Errorf("%s -> %s/allowed, which nginx allows to A only: %v %q, want %q", tc.from.Name, tc.to, err, allowed, want)
		}
		peer, err := tc.from.PeerEcho(netip.AddrPortFrom(netip.MustParseAddr(strings.Trim(tc.to, "[]")), 9090))
		if err != nil || peer.String() != tc.client {
			t.Errorf("%s -> %s:9090: the server's getpeername() is %s (%v), want %s", tc.from.Name, tc.to, peer, err, tc.client)
		}
	}
	if !strings.Contains(agentB.Log(), "original_source=true") {
		t.Errorf("agent B does not say it shows the real client:\n%s", agentB.Log())
	}
	// Another process deletes the return path's rules: the agent puts them back within a second, and meanwhile
	// nothing of the application's replies leaves B towards the client.
	running := routing(b)
	b.MustRun("ip", "-4", "rule", "del", "pref", "32760")
	b.MustRun("ip", "-6", "rule", "del", "pref", "32760")
	agentB.WaitLog(t, "the return path's rules were removed by another process: put back", 5*time.Second)
	if now := routing(b); now != running {
		t.Errorf("the return path after its repair:\n%s\nwant as installed:\n%s", now, running)
	}
	if out, err := curl(a, fmt.Sprintf("http://%s:8080/allowed", b.Addr)); err != nil || !strings.Contains(out, "Active connections") {
		t.Errorf("A -> B/allowed after the return path's repair: %v %q", err, out)
	}
	if got := routing(b); got == routingBefore {
		t.Errorf("no return-path rule or route while the agent runs:\n%s", got)
	}
	if !hasZoneTable(b) {
		t.Error("no zone table for the agent's transparent connections while it runs")
	}
	if err := agentB.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, exited := agentB.Wait(10 * time.Second); !exited {
		t.Fatal("agent B did not stop on SIGTERM")
	}
	if got := routing(b); got != routingBefore {
		t.Errorf("the return path's rules or routes outlived the agent:\nbefore:\n%s\nafter:\n%s", routingBefore, got)
	}
	if hasZoneTable(b) {
		t.Error("the zone table outlived the agent")
	}

	agentB = b.StartAgent(agentBin, dual(b, a, "[capture]\noriginal_source = false\n"))
	agentB.WaitReady(t, 15*time.Second)
	if out, err := curl(a, fmt.Sprintf("http://%s:8080/allowed", b.Addr)); err != nil || !strings.Contains(out, "403 Forbidden") {
		t.Errorf("A -> B/allowed without original_source: %v %q, want 403 (nginx sees B itself)", err, out)
	}
	if peer, err := a.PeerEcho(netip.AddrPortFrom(b.Addr, 9090)); err != nil || peer != b.Addr {
		t.Errorf("A -> B:9090 without original_source: the server's getpeername() is %s (%v), want B's %s", peer, err, b.Addr)
	}
	if got := routing(b); got != routingBefore {
		t.Errorf("original_source = false installed rules or routes:\n%s", got)
	}
}

// routing is h's policy rules, both families, and the routes of the return path's table (read from every table's:
// a table the kernel has made stays, empty, when its last route goes). The other tables' routes are left out:
// IPv6 link-local ones come and go by themselves.
func routing(h *lab.Host) string {
	var out strings.Builder
	out.WriteString(h.MustRun("ip", "-4", "rule"))
	out.WriteString(h.MustRun("ip", "-6", "rule"))
	for _, family := range []string{"-4", "-6"} {
		for line := range strings.Lines(h.MustRun("ip", family, "route", "show", "table", "all")) {
			if strings.Contains(line, "table 15006") {
				out.WriteString(line)
			}
		}
	}
	return out.String()
}
