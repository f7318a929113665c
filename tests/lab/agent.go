package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// RepoRoot is the root of the repository this package is in.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// BuildAgent builds the ambient-agent binary into dir and returns its path. It
// is built the way packaging/build.sh builds what ships (static, PIE, no
// symbol table), so that lab tests and benchmarks run the packaged program:
// user and group names resolved by Go's own /etc/passwd and /etc/group reader,
// Go's resolver, and the memory a PIE's relocations cost.
func BuildAgent(dir string) (string, error) {
	return BuildAgentWithTags(dir, "")
}

// BuildAgentWithTags is BuildAgent with build tags (comma-separated; "" for none): the soak's deliberately broken
// agents. The binary is named after the tags.
func BuildAgentWithTags(dir, tags string) (string, error) {
	name := "ambient-agent"
	if tags != "" {
		name += "-" + strings.ReplaceAll(tags, ",", "-")
	}
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-buildmode=pie", "-ldflags=-s -w", "-tags="+tags, "-o", bin, "./agent/cmd/ambient-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Dir = RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ambient-agent: %w\n%s", err, out)
	}
	return bin, nil
}

// Agent is an ambient-agent process in a host.
type Agent struct {
	*Proc
	Host       *Host
	ConfigPath string
	// old: a release older than the control socket, whose whole admin API is
	// on loopback TCP 15000.
	old bool
}

// WriteConfig writes the agent configuration file of the host, with the
// host's own control socket (WithSocket).
func (h *Host) WriteConfig(config string) string {
	h.lab.t.Helper()
	return h.writeConfig(h.WithSocket(config))
}

// WithSocket adds the host's control socket to an agent configuration that
// names none, for tests that write the file themselves.
func (h *Host) WithSocket(config string) string {
	if strings.Contains(config, "[admin]") {
		return config
	}
	return config + fmt.Sprintf("\n[admin]\nsocket = %q\n", h.Socket)
}

// StartOldAgent starts a release older than the control socket (it has no
// [admin] socket key, and serves everything on loopback TCP).
func (h *Host) StartOldAgent(bin, config string) *Agent {
	h.lab.t.Helper()
	path := h.writeConfig(config)
	p := h.Start("agent", bin, "run", "-config", path)
	return &Agent{Proc: p, Host: h, ConfigPath: path, old: true}
}

func (h *Host) writeConfig(config string) string {
	h.lab.t.Helper()
	path := filepath.Join(h.Dir, "config.toml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		h.lab.t.Fatal(err)
	}
	return path
}

// StartAgent writes config and starts the agent binary bin in the host.
func (h *Host) StartAgent(bin, config string) *Agent {
	h.lab.t.Helper()
	path := h.WriteConfig(config)
	p := h.Start("agent", bin, "run", "-config", path)
	return &Agent{Proc: p, Host: h, ConfigPath: path}
}

// StartNextAgent starts bin beside the host's running agent, with config: the
// new agent takes over from the running one (a restart or an upgrade without
// systemd). Its log is label's.
func (h *Host) StartNextAgent(label, bin, config string) *Agent {
	h.lab.t.Helper()
	path := h.WriteConfig(config)
	p := h.Start(label, bin, "run", "-config", path)
	return &Agent{Proc: p, Host: h, ConfigPath: path}
}

// StartAgentWithHostSys is StartAgent for an agent that must see the
// machine's cgroups (workloads recognised by systemd unit).
func (h *Host) StartAgentWithHostSys(bin, config string) *Agent {
	h.lab.t.Helper()
	path := h.WriteConfig(config)
	p := h.StartWithHostSys("agent", bin, "run", "-config", path)
	return &Agent{Proc: p, Host: h, ConfigPath: path}
}

// HTTPClient returns a client whose connections originate in the host.
func (h *Host) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:       func(ctx context.Context, n, a string) (net.Conn, error) { return h.Dial(ctx, n, a) },
			DisableKeepAlives: true,
		},
	}
}

// Get fetches url from inside the host and returns the status and body.
func (h *Host) Get(url string) (int, string, error) {
	resp, err := h.HTTPClient(5 * time.Second).Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// Ready reports whether the agent's readiness endpoint answers 200.
func (a *Agent) Ready() bool {
	code, _, err := a.Host.Get("http://127.0.0.1:15021/healthz/ready")
	return err == nil && code == http.StatusOK
}

// WaitReady waits until the agent is ready, failing the test after d or if the
// agent exits.
func (a *Agent) WaitReady(t T, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if a.Exited() {
			t.Fatalf("agent on %s exited before it was ready:\n%s", a.Host.Name, a.Log())
		}
		if a.Ready() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("agent on %s not ready after %s:\n%s", a.Host.Name, d, a.Log())
}

// WaitLog waits until the agent's log contains s.
func (a *Agent) WaitLog(t T, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(a.Log(), s) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("agent log on %s does not contain %q after %s:\n%s", a.Host.Name, s, d, a.Log())
}

// Admin fetches a path of the agent's control API (its unix socket).
func (a *Agent) Admin(path string) (string, error) {
	url, client := "http://localhost"+path, a.ControlClient(5*time.Second)
	if a.old {
		url, client = "http://127.0.0.1:15000"+path, a.Host.HTTPClient(5*time.Second)
	}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("admin %s: status %d: %s", path, resp.StatusCode, body)
	}
	return string(body), nil
}

// ControlClient speaks HTTP to the agent's control socket.
func (a *Agent) ControlClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", a.Host.Socket)
		},
		DisableKeepAlives: true,
	}}
}

// Reload sends SIGHUP and waits until the agent reports the reload done.
func (a *Agent) Reload(t T) {
	t.Helper()
	before := strings.Count(a.Log(), "configuration reloaded")
	if err := a.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Count(a.Log(), "configuration reloaded") > before {
			return
		}
	}
	t.Fatalf("agent on %s did not reload:\n%s", a.Host.Name, a.Log())
}
