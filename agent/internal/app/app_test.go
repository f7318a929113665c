package app

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/tests/leak"
)

// testConfig writes a config file and returns it loaded, with ephemeral ports.
func testConfig(t testing.TB, src string) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Admin.Socket = filepath.Join(filepath.Dir(path), "control.sock")
	cfg.Admin.Address = netip.MustParseAddrPort("127.0.0.1:0")
	cfg.Admin.ReadinessAddress = netip.MustParseAddrPort("127.0.0.1:0")
	cfg.Admin.MetricsAddress = netip.MustParseAddrPort("127.0.0.1:0")
	// Unit tests run in the machine's own namespace: never touch its nftables.
	cfg.Capture.Enabled = false
	return cfg
}

// notifySocket listens where sd_notify writes and collects the messages.
type notifySocket struct {
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	n := &notifySocket{}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n
}

func (n *notifySocket) wait(t *testing.T, s string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		n.mu.Lock()
		all := strings.Join(n.msgs, "\n")
		n.mu.Unlock()
		if strings.Contains(all, s) {
			return
		}
	}
	t.Fatalf("sd_notify never sent %q; got %q", s, n.msgs)
}

func startApp(t *testing.T, cfg *config.Config) (*App, chan error, *syncWriter, context.CancelFunc) {
	t.Helper()
	logs := &syncWriter{w: &bytes.Buffer{}}
	level := new(slog.LevelVar)
	a, err := New(cfg, newLogger(cfg.Log, logs, level), level)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, make(chan os.Signal)) }()
	return a, done, logs, cancel
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// String is what was written so far (the writer must be a *bytes.Buffer).
func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.(*bytes.Buffer).String()
}

func TestNotifyReadyAndStopping(t *testing.T) {
	n := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", "")
	noLeaks := leak.Check(t, leak.Options{})
	a, done, _, cancel := startApp(t, testConfig(t, "[node]\nname = \"t\"\n"))
	n.wait(t, "READY=1")
	n.wait(t, "STATUS=ready")
	n.wait(t, "WATCHDOG=1")
	resp, err := http.Get("http://" + a.readySrv.Addr().String() + "/healthz/ready")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("readiness: %v %v", resp, err)
	}
	resp.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	n.wait(t, "STOPPING=1")
	// Run is over: every listener, connection and goroutine of the agent with it.
	http.DefaultClient.CloseIdleConnections()
	noLeaks()
}

// The control API is on the unix socket, mode 0660; the TCP admin port has
// nothing that changes the agent or shows its configuration.
func TestQuitQuitQuit(t *testing.T) {
	cfg := testConfig(t, "[node]\nname = \"t\"\n")
	a, done, _, cancel := startApp(t, cfg)
	defer cancel()
	if fi, err := os.Stat(cfg.Admin.Socket); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("control socket %s: %v %v, want a socket of mode 0660", cfg.Admin.Socket, fi.Mode(), err)
	}
	for _, path := range []string{"/quitquitquit", "/logging?level=debug"} {
		resp, err := http.Post("http://"+a.adminSrv.Addr().String()+path, "", nil)
		if err != nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("POST %s on the TCP admin port: %v %v, want 404", path, resp, err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get("http://" + a.adminSrv.Addr().String() + "/config_dump")
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /config_dump on the TCP admin port: %v %v, want 404", resp, err)
	}
	resp.Body.Close()
	// A page of another origin, resolved to loopback (DNS rebinding), gets nothing.
	req, _ := http.NewRequest("GET", "http://"+a.adminSrv.Addr().String()+"/healthz/ready", nil)
	req.Host = "attacker.example:15000"
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("a request for Host attacker.example: %v %v, want 421", resp, err)
	}
	unix := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", cfg.Admin.Socket)
	}}}
	resp, err = unix.Post("http://localhost/quitquitquit", "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("quitquitquit on the control socket: %v %v", resp, err)
	}
	resp.Body.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("agent did not stop after /quitquitquit")
	}
}

func TestReloadKeepsConfigOnError(t *testing.T) {
	cfg := testConfig(t, "[node]\nname = \"t\"\n")
	a, done, logs, cancel := startApp(t, cfg)
	defer func() { cancel(); <-done }()
	if err := os.WriteFile(cfg.Path, []byte("[node]\nname = \"t\"\nbogus = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a.reload()
	if a.cfg.Load() != cfg {
		t.Fatal("a rejected reload replaced the running config")
	}
	if !strings.Contains(logs.String(), "config.toml:3: node.bogus: unknown key") {
		t.Errorf("log does not name the problem:\n%s", logs.String())
	}
	if err := os.WriteFile(cfg.Path, []byte("[node]\nname = \"t\"\n[log]\nlevel = \"debug\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a.reload()
	if a.level.Level() != slog.LevelDebug || a.cfg.Load().Log.Level != slog.LevelDebug {
		t.Error("a good reload did not apply log.level")
	}
}

func TestBusyPortIsAnErrorAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t, "[node]\nname = \"t\"\n")
	cfg.Admin.Address = netip.MustParseAddrPort(ln.Addr().String())
	level := new(slog.LevelVar)
	if _, err := New(cfg, slog.New(slog.DiscardHandler), level); err == nil || !strings.Contains(err.Error(), "admin.address") {
		t.Fatalf("New with a busy admin port: %v", err)
	}
}

func TestRefusesToStartWithoutCertificates(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, "[node]\nname = \"t\"\n[identity]\ndir = \""+dir+"\"\n[[workload]]\nname = \"w\"\naddresses = [\"10.1.2.3\"]\n")
	_, err := New(cfg, slog.New(slog.DiscardHandler), new(slog.LevelVar))
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("New without certificates: %v; want an error naming %s", err, dir)
	}
}
