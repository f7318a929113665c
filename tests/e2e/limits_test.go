package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// 20,000 connections to B's HBONE port from one source (C) that never start TLS: B's agent keeps at most
// [limits] handshakes_per_source of them, closes the rest at once and counts them, and A's traffic to B
// goes on.
func TestHandshakeFloodFromOneSourceDoesNotStopAnother(t *testing.T) {
	const procs, each = 4, 5000 // 20,000 in all, held by bash processes (a process may hold 20,000 files here)
	d := newDatapathLab(t)
	start := time.Now()
	var floods []*lab.Proc
	for i := range procs {
		floods = append(floods, d.c.Start(fmt.Sprintf("flood-%d", i), "bash", "-c", fmt.Sprintf(
			`n=0; for i in $(seq %d); do exec {fd}<>/dev/tcp/%s/15008 && n=$((n+1)); done 2>/dev/null; echo "opened $n"; exec sleep 120`,
			each, d.b.Addr)))
	}
	opened := 0
	for _, p := range floods {
		deadline := time.Now().Add(2 * time.Minute)
		for !strings.Contains(p.Log(), "opened") && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(p.Log()), "opened %d", &n); err != nil {
			t.Fatalf("a flood did not finish: %q", p.Log())
		}
		opened += n
	}
	elapsed := time.Since(start)
	t.Logf("C opened %d connections to %s:15008 in %s", opened, d.b.Addr, elapsed.Round(time.Millisecond))
	if opened < procs*each*9/10 {
		t.Fatalf("the flood did not happen: %d of %d connections opened", opened, procs*each)
	}
	fails := procs*each - opened

	// While C holds them all, A's captured traffic reaches B over HBONE.
	url := fmt.Sprintf("http://%s:8080/", d.b.Addr)
	if out, err := curl(d.a, url); err != nil || !strings.Contains(out, marker) {
		t.Fatalf("A -> B during the flood: %v %q\nB's agent:\n%s", err, out, d.agentB.Log())
	}
	metrics := scrape(t, d.b)
	refused, ok := metricValue(t, metrics, "ambient_agent_connections_refused_total",
		map[string]string{"listener": "hbone", "stage": "handshake", "limit": "per_source"})
	// B holds 64 of them in their handshake; each handshake timeout (10 s) frees those slots for more.
	held := 64 * (2 + int(elapsed/(10*time.Second)))
	if want := float64(procs*each - held - fails); !ok || refused < want {
		t.Errorf("refused handshakes: %v (%v), want at least %v", refused, ok, want)
	}
	// One warning line a second at most, not one per connection.
	if n := strings.Count(d.agentB.Log(), "connection refused: over a limit"); n == 0 || n > int(time.Since(start)/time.Second)+3 {
		t.Errorf("%d warning lines for %v refused connections, want a few", n, refused)
	}
	if !d.agentB.Ready() {
		t.Errorf("B's agent is not ready during the flood")
	}
}
