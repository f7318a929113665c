package e2e

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// nobody is a real unprivileged user of the machine (uid and gid 65534).
var nobody = []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"}

func asNobody(h *lab.Host, args ...string) (string, error) {
	return h.Run(lab.Timeout(15*time.Second), nobody[0], append(nobody[1:], args...)...)
}

// `nft flush ruleset` under a running agent: the agent notices, is not ready until
// its table is back, puts it back within a second, and traffic stays in HBONE, even
// requests made while the ruleset is flushed (the agent's live copy of the table
// survives a flush).
func TestFlushedRulesetIsRepaired(t *testing.T) {
	d := newDatapathLab(t)
	if strings.Contains(d.agentA.Log(), "no live copy") {
		t.Fatalf("the agent keeps no live copy of its table:\n%s", d.agentA.Log())
	}
	// Requests from A to B every 20 ms, while the ruleset is flushed over and over: without the live copy
	// the table would be missing for a good part of that time.
	stop := d.Capture("flushes", d.a)
	prober := d.a.Start("prober", "bash", "-c", fmt.Sprintf(
		`for i in $(seq 100); do curl -s --max-time 1 -o /dev/null -w '%%{http_code}\n' http://%s:8080/%s-$i; sleep 0.02; done; echo done`, d.b.Addr, marker))
	flusher := d.a.Start("flusher", "bash", "-c", `while :; do nft flush ruleset; done`)
	if _, exited := prober.Wait(30 * time.Second); !exited {
		t.Fatal("the prober did not finish")
	}
	flusher.Kill()
	pcap := stop()
	if raw, err := os.ReadFile(pcap); err != nil || bytes.Contains(raw, []byte(marker)) {
		t.Fatalf("a request crossed the bridge in plaintext while the ruleset was flushed (%v):\n%s", err, d.PcapSummary(pcap))
	}
	if ok := strings.Count(prober.Log(), "200"); ok < 90 {
		t.Errorf("%d of 100 requests succeeded during the flushes, want nearly all:\n%s", ok, prober.Log())
	}

	start := time.Now()
	d.a.MustRun("nft", "flush", "ruleset")
	for !hasTable(d.a) && time.Since(start) < 3*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	if !hasTable(d.a) {
		t.Fatalf("the table is not back 3 s after nft flush ruleset:\n%s", d.agentA.Log())
	}
	t.Logf("table back %s after nft flush ruleset started (nft's own start-up included)", elapsed.Round(time.Millisecond))
	if elapsed > time.Second {
		t.Errorf("the table came back after %s, want within 1 s", elapsed)
	}
	// Not ready from the change until the repair: logged in that order.
	d.agentA.WaitLog(t, "capture table repaired", 5*time.Second)
	log := d.agentA.Log()
	notReady := strings.Index(log, "capture table changed by another process: not ready")
	if notReady < 0 || notReady > strings.Index(log, "capture table repaired") {
		t.Fatalf("the agent did not report the change (not ready) before the repair:\n%s", log)
	}
	if !d.agentA.Ready() {
		t.Fatalf("not ready after the repair:\n%s", log)
	}
	if n, ok := metricValue(t, scrape(t, d.a), "ambient_agent_capture_repairs_total", nil); !ok || n < 1 {
		t.Errorf("ambient_agent_capture_repairs_total = %v %v, want >= 1", n, ok)
	}
	if out := d.a.MustRun(agentBin, "status"); !strings.Contains(out, "Capture:") || strings.Contains(out, "NOT INSTALLED") {
		t.Errorf("status after the repair:\n%s", out)
	}

	// `cleanup` will not open a host whose agent runs; -force does, and the agent closes it again.
	if out, err := d.a.Run(lab.Timeout(10*time.Second), agentBin, "cleanup"); err == nil || !strings.Contains(out, "an agent is running") {
		t.Fatalf("cleanup under a running agent: %v %q", err, out)
	}
	d.a.MustRun(agentBin, "cleanup", "-force")
	for deadline := time.Now().Add(2 * time.Second); !hasTable(d.a) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !hasTable(d.a) {
		t.Fatalf("the table is not back after cleanup -force:\n%s", d.agentA.Log())
	}

	// And the mesh still carries A's traffic only inside HBONE.
	stop = d.Capture("after-flush", d.a)
	out, err := curl(d.a, fmt.Sprintf("http://%s:8080/%s", d.b.Addr, marker+"-request"))
	pcap = stop()
	if err != nil || !strings.Contains(out, marker) {
		t.Fatalf("A -> B after the repair: %v %q", err, out)
	}
	if raw, err := os.ReadFile(pcap); err != nil || bytes.Contains(raw, []byte(marker)) {
		t.Fatalf("after the repair the request crossed the bridge in plaintext (%v):\n%s", err, d.PcapSummary(pcap))
	}
}

// A local user who is not the agent's can neither stop it, nor change its log level,
// nor read its configuration: the loopback port is read-only and the control socket
// is the agent's user's and group's only.
func TestUnprivilegedUserCannotControlTheAgent(t *testing.T) {
	d := newDatapathLab(t)
	for _, req := range []struct{ method, path string }{
		{"POST", "/quitquitquit"}, {"POST", "/logging?level=debug"}, {"GET", "/config_dump"}, {"GET", "/debug/pprof/"},
	} {
		out, err := asNobody(d.a, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", req.method, "http://127.0.0.1:15000"+req.path)
		if err != nil || strings.TrimSpace(out) != "404" {
			t.Errorf("nobody: %s 127.0.0.1:15000%s: %v %q, want 404", req.method, req.path, err, out)
		}
		out, err = asNobody(d.a, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", d.a.Socket, "-X", req.method, "http://localhost"+req.path)
		if err == nil || !strings.Contains(out, "000") {
			t.Errorf("nobody: %s %s on the control socket: %v %q, want no connection", req.method, req.path, err, out)
		}
	}
	if out, err := asNobody(d.a, agentBin, "status"); err == nil || !strings.Contains(out, "does not answer") {
		t.Errorf("nobody: ambient-agent status: %v %q, want refused", err, out)
	}
	// Root (the agent's user in the lab) reaches all of it.
	if out := d.a.MustRun(agentBin, "status"); !strings.Contains(out, "Ready:") || !strings.Contains(out, "yes") {
		t.Errorf("root: ambient-agent status:\n%s", out)
	}
	if d.agentA.Exited() || !d.agentA.Ready() {
		t.Fatalf("the agent stopped or is not ready:\n%s", d.agentA.Log())
	}
	if dump, err := d.agentA.Admin("/config_dump"); err != nil || !strings.Contains(dump, `"level": "INFO"`) {
		t.Fatalf("the log level changed, or the dump is unreadable: %v", err)
	}
}

// While no agent runs and its table stays (a crash, a restart), an unprivileged user
// who binds the agent's ports receives nothing: capture's guard resets redirected
// connections that reach a socket without the agent's mark, outbound and inbound.
func TestSquatterGetsNothingWhileTheAgentIsDown(t *testing.T) {
	d := newDatapathLab(t)
	for _, a := range []*lab.Agent{d.agentA, d.agentB} {
		a.Signal(syscall.SIGKILL)
		a.Wait(5 * time.Second)
	}
	if !hasTable(d.a) || !hasTable(d.b) {
		t.Fatal("a killed agent's table is gone")
	}
	// Squatters in a loop, as a user would race a restarting agent.
	squat := func(h *lab.Host, port int) *lab.Proc {
		return h.Start(fmt.Sprintf("squat-%d", port), "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
			"bash", "-c", fmt.Sprintf("while :; do nc -l %d; sleep 0.05; done", port))
	}
	outSquat, inSquat := squat(d.a, 15001), squat(d.b, 15006)
	for _, probe := range []struct {
		h    *lab.Host
		port string
	}{{d.a, ":15001"}, {d.b, ":15006"}} {
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(probe.h.MustRun("ss", "-ltnH"), probe.port) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if !strings.Contains(probe.h.MustRun("ss", "-ltnH"), probe.port) {
			t.Fatalf("the squatter on %s does not listen on %s", probe.h.Name, probe.port)
		}
	}
	url := fmt.Sprintf("http://%s:8080/%s", d.b.Addr, marker+"-request")
	if out, err := curl(d.a, url); err == nil {
		t.Errorf("A (captured, agent down) reached B: %q", out)
	}
	if out, err := curl(d.c, url); err == nil {
		t.Errorf("C reached B's application while B's agent is down: %q", out)
	}
	time.Sleep(200 * time.Millisecond)
	for _, p := range []*lab.Proc{outSquat, inSquat} {
		if strings.Contains(p.Log(), marker) || strings.Contains(p.Log(), "GET /") {
			t.Errorf("a squatter received a captured connection:\n%s", p.Log())
		}
	}
	if n := len(d.b.NginxAccessLog()); n != 0 {
		t.Errorf("B's nginx served %d requests while its agent was down", n)
	}
}

// Inbound capture covers every address of the host, IPv6 and addresses added after the agent started: an
// application listening on the wildcard address is reached only through the agent, which refuses what no
// workload owns. An excluded port, or an address left unmeshed by the configuration, is reached directly,
// and doctor lists it.
func TestEveryHostAddressIsCaptured(t *testing.T) {
	d := newDatapathLab(t)
	const extra = "10.77.0.99"
	d.b.MustRun("ip", "addr", "add", extra+"/24", "dev", "eth0")
	for _, url := range []string{"http://" + extra + ":8080/", fmt.Sprintf("http://[%s]:8080/", d.b.Addr6)} {
		if out, err := curl(d.c, url); err == nil {
			t.Errorf("C reached B's application at %s, an address that is no workload's, around the agent: %q", url, out)
		}
	}
	d.agentB.WaitLog(t, "no local workload has the destination address", 5*time.Second)
	if out, err := curl(d.c, fmt.Sprintf("http://%s:8080/", d.b.Addr)); err != nil || !strings.Contains(out, marker) {
		t.Fatalf("C -> B's workload address: %v %q", err, out)
	}
	// Port 22 is excluded: reached directly on any address (nginx listens on it too).
	if out, err := curl(d.c, "http://"+extra+":22/"); err != nil || !strings.Contains(out, marker) {
		t.Fatalf("C -> B:22 (excluded): %v %q", err, out)
	}
	log := accessLog(d.b, func(l []string) bool { return len(l) >= 2 })
	if len(log) != 2 || !slices.Contains(log, d.c.Addr.String()+" 22") {
		t.Errorf("nginx on B served %v; want the agent's request and C's on port 22 only", log)
	}
	out, _ := d.b.Run(lab.Timeout(10*time.Second), agentBin, "doctor")
	if !strings.Contains(out, "[NOTE] unmeshed listeners") || !strings.Contains(out, "0.0.0.0:22 (port excluded)") ||
		strings.Contains(out, ":8080") {
		t.Errorf("doctor does not list exactly the direct listeners:\n%s", out)
	}

	// Left unmeshed by the configuration (applied by a reload), the address reaches the application directly.
	c := meshConfig(d.b, d.a)
	c.Capture = fmt.Sprintf("unmeshed_addresses = [%q]", extra)
	cfg := c.String()
	if err := os.WriteFile(d.agentB.ConfigPath, []byte(d.b.WithSocket(cfg)), 0o644); err != nil {
		t.Fatal(err)
	}
	d.agentB.Reload(t)
	if out, err := curl(d.c, "http://"+extra+":8080/"); err != nil || !strings.Contains(out, marker) {
		t.Fatalf("C -> B's unmeshed address: %v %q\n%s", err, out, d.agentB.Log())
	}
	if out, err := curl(d.c, fmt.Sprintf("http://[%s]:8080/", d.b.Addr6)); err == nil {
		t.Errorf("C reached B's IPv6 address, still meshed, around the agent: %q", out)
	}
	if out, _ := d.b.Run(lab.Timeout(10*time.Second), agentBin, "doctor"); !strings.Contains(out, extra+":") && !strings.Contains(out, "unmeshed addresses") {
		t.Errorf("doctor does not list the listener on the unmeshed address:\n%s", out)
	}
}
