package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

const deny9001 = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-9001
  namespace: default
spec:
  action: DENY
  rules:
  - to:
    - operation:
        ports: ["9001"]
`

// cli runs the agent's CLI in h and returns its exit code, stdout and stderr.
func cli(t *testing.T, h *lab.Host, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := h.Command(lab.Timeout(30*time.Second), agentBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String(), errb.String()
	case err != nil:
		t.Fatalf("%v: %v", args, err)
	}
	return 0, out.String(), errb.String()
}

// The operator's live commands against running agents: connections lists a connection carried over HBONE on
// both sides with its identities; probe checks a peer's HBONE port (its identity, TLS 1.3, HTTP/2) and fails
// clearly on the wrong identity or a closed port; log-level reads and changes the level of the running agent;
// explain says what a connection would do and what authorization decides, with the deciding policy; bugreport
// writes one archive of both the agent's and the host's side, without a key.
func TestOperatorCommands(t *testing.T) {
	lab.Require(t, "nft", "nc", "socat", "ss")
	l := lab.New(t, 2)
	a, b := l.Hosts[0], l.Hosts[1]
	for _, h := range []*lab.Host{a, b} {
		h.Issue(agentBin, "default", "default")
	}
	// A's policy set denies port 9001 (explain reports it for a destination on B).
	policyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(policyDir, "deny.yaml"), []byte(deny9001), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgA := meshConfig(a, b)
	cfgA.Tables = fmt.Sprintf("[policy]\ndir = %q\n", policyDir)
	agentA := a.StartAgent(agentBin, cfgA.String())
	agentB := b.StartAgent(agentBin, meshConfig(b, a).String())
	agentA.WaitReady(t, 15*time.Second)
	agentB.WaitReady(t, 15*time.Second)
	id := "spiffe://cluster.local/ns/default/sa/default"

	// A long-lived connection from A to a sink on B, carried over HBONE.
	b.Start("sink", "socat", "TCP-LISTEN:9000,fork,reuseaddr", "SYSTEM:cat >/dev/null")
	b.WaitListening(9000, 5*time.Second)
	client := a.Start("nc", "bash", "-c", fmt.Sprintf("exec nc %s 9000 < <(echo hello; sleep 60)", b.Addr))
	defer client.Kill()

	type conn struct {
		Direction, Route, SrcIdentity, DstIdentity string
		Dst                                        string
		BytesSent                                  int64
	}
	find := func(h *lab.Host, dst string) (conn, string) {
		var last string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			code, out, errOut := cli(t, h, "connections", "-json")
			if code != 0 {
				t.Fatalf("connections -json on %s: exit %d: %s", h.Name, code, errOut)
			}
			var cs []conn
			if err := json.Unmarshal([]byte(out), &cs); err != nil {
				t.Fatalf("connections -json on %s: %v\n%s", h.Name, err, out)
			}
			for _, c := range cs {
				if c.Dst == dst && c.BytesSent > 0 {
					return c, out
				}
			}
			last = out
		}
		t.Fatalf("connections on %s shows no connection to %s that carried bytes:\n%s", h.Name, dst, last)
		return conn{}, ""
	}
	dst := fmt.Sprintf("%s:9000", b.Addr)
	if c, out := find(a, dst); c.Direction != "outbound" || c.Route != "hbone" || c.DstIdentity != id {
		t.Errorf("A's connection to %s: %+v, want outbound over hbone to %s\n%s", dst, c, id, out)
	}
	if c, out := find(b, dst); c.Direction != "inbound" || c.SrcIdentity != id {
		t.Errorf("B's connection to %s: %+v, want inbound from %s\n%s", dst, c, id, out)
	}
	if _, out, _ := cli(t, a, "connections"); !strings.Contains(out, dst) || !strings.Contains(out, "1 open") {
		t.Errorf("connections on A (text):\n%s", out)
	}

	// probe: B's HBONE port answers with B's identity.
	code, out, errOut := cli(t, a, "probe", b.Addr.String())
	if code != 0 || !strings.Contains(out, "Peer identity:  "+id+" (TLS 1.3, ALPN h2)") || !strings.Contains(out, "HTTP/2:         ok") {
		t.Errorf("probe %s: exit %d\n%s%s", b.Addr, code, out, errOut)
	}
	var res struct {
		OK           bool   `json:"ok"`
		PeerIdentity string `json:"peerIdentity"`
		HTTP2        bool   `json:"http2"`
		Stage        string `json:"failedStage"`
	}
	code, out, _ = cli(t, a, "probe", "-json", "-expect", "spiffe://cluster.local/ns/other/sa/other", b.Addr.String())
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 1 || res.OK || res.Stage != "tls" {
		t.Errorf("probe expecting another identity: exit %d, %+v (%v); want exit 1, failed at tls\n%s", code, res, err, out)
	}
	code, out, errOut = cli(t, a, "probe", "10.77.0.250") // no host has this address: the connect fails
	if code != 1 || !strings.Contains(errOut, "connect failed") || !strings.Contains(out, "FAILED") {
		t.Errorf("probe of an address nobody has: exit %d\n%s%s", code, out, errOut)
	}
	// Only the HBONE port: the probe's socket passes the capture rules, so it must not scan ports.
	if code, _, errOut := cli(t, a, "probe", b.Addr.String()+":22"); code != 1 || !strings.Contains(errOut, "HBONE port, 15008, only") {
		t.Errorf("probe of port 22: exit %d, %s", code, errOut)
	}
	if code, _, errOut := cli(t, a, "probe", "not-an-address"); code != 1 || !strings.Contains(errOut, "is not IP or IP:PORT") {
		t.Errorf("probe not-an-address: exit %d, %s", code, errOut)
	}

	// log-level: read, change, read back; a wrong level is refused and changes nothing.
	if _, out, _ := cli(t, a, "log-level"); strings.TrimSpace(out) != "level: info" {
		t.Errorf("log-level: %q, want level: info", out)
	}
	if code, out, _ := cli(t, a, "log-level", "debug"); code != 0 || strings.TrimSpace(out) != "level: debug" {
		t.Errorf("log-level debug: exit %d, %q", code, out)
	}
	if code, _, errOut := cli(t, a, "log-level", "loud"); code != 1 || !strings.Contains(errOut, "loud") {
		t.Errorf("log-level loud: exit %d, %q; want 1 and the refusal", code, errOut)
	}
	if _, out, _ := cli(t, a, "log-level"); strings.TrimSpace(out) != "level: debug" {
		t.Errorf("log-level after the refusal: %q, want level: debug", out)
	}
	agentA.WaitLog(t, "log level changed through the admin API", 5*time.Second)

	// explain: what A would do with a connection to B's workload, and what authorization says of it.
	type explained struct {
		Route, Gateway, Target, Workload, Node, Reason string
		Expected                                       []string `json:"expectedIdentities"`
		Policy                                         *struct{ Verdict, Reason, Policy string }
	}
	explain := func(dst string) (int, explained, string) {
		code, out, errOut := cli(t, a, "explain", "-json", dst)
		var e explained
		if code == 0 {
			if err := json.Unmarshal([]byte(out), &e); err != nil {
				t.Fatalf("explain -json %s: %v\n%s", dst, err, out)
			}
		}
		return code, e, out + errOut
	}
	if code, e, out := explain(dst); code != 0 || e.Route != "hbone" || e.Gateway != b.Addr.String()+":15008" || e.Target != dst ||
		e.Workload != "default/app-h2" || len(e.Expected) != 1 || e.Expected[0] != id || e.Policy == nil || e.Policy.Verdict != "ALLOW" {
		t.Errorf("explain %s: exit %d, %+v\n%s", dst, code, e, out)
	}
	if code, e, out := explain(b.Addr.String() + ":9001"); code != 0 || e.Policy == nil || e.Policy.Verdict != "DENY" ||
		e.Policy.Policy != "default/deny-9001" {
		t.Errorf("explain of a denied port: exit %d, %+v\n%s", code, e, out)
	}
	if code, e, out := explain("10.77.0.250:80"); code != 0 || e.Route != "passthrough" || e.Policy != nil {
		t.Errorf("explain of an address outside the mesh: exit %d, %+v\n%s", code, e, out)
	}
	if code, e, out := explain("127.0.0.1:15001"); code != 0 || e.Route != "drop" || !strings.Contains(e.Reason, "loopback") {
		t.Errorf("explain of the agent's own port: exit %d, %+v\n%s", code, e, out)
	}
	if code, _, out := explain("nowhere"); code != 1 || !strings.Contains(out, "is not IP:PORT") {
		t.Errorf("explain nowhere: exit %d\n%s", code, out)
	}
	if _, out, _ := cli(t, a, "explain", dst); !strings.Contains(out, "Route:") || !strings.Contains(out, "HBONE to "+b.Addr.String()+":15008") ||
		!strings.Contains(out, "Authorization:  ALLOW") {
		t.Errorf("explain %s (text):\n%s", dst, out)
	}

	// bugreport: one archive with the agent's state and the host's rules, no key, mode 0600.
	out = filepath.Join(t.TempDir(), "report.tar.gz")
	if code, stdout, errOut := cli(t, a, "bugreport", "-config", agentA.ConfigPath, "-out", out); code != 0 || !strings.Contains(stdout, "wrote "+out) {
		t.Fatalf("bugreport: exit %d\n%s%s", code, stdout, errOut)
	}
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("bugreport file: %v %v, want mode 0600", st.Mode(), err)
	}
	files := map[string]string{}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[path.Base(h.Name)] = string(b)
	}
	for name, want := range map[string]string{
		"status.txt": "Ready:", "config_dump.json": `"workloads"`, "connections.json": dst, "doctor.txt": "capture rules",
		"nft.txt": "table inet ambient_agent", "metrics.txt": "istio_tcp_connections_opened_total", "config.toml": "[[workload]]",
		"goroutines.txt": "goroutine ", "log-level.txt": "level: debug",
	} {
		if !strings.Contains(files[name], want) {
			t.Errorf("the report's %s does not hold %q:\n%.400s", name, want, files[name])
		}
	}
	for name, content := range files {
		if strings.Contains(content, "PRIVATE KEY") {
			t.Errorf("the report's %s holds a private key", name)
		}
	}
}
