package spire

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Version is the SPIRE release the tests run, as built by tests/tools/build-spire.sh.
const Version = "v1.13.3"

// BinDir is where the SPIRE binaries are expected: $SPIRE_BIN_DIR, else the build script's cache directory.
func BinDir() (string, error) {
	if dir := os.Getenv("SPIRE_BIN_DIR"); dir != "" {
		return dir, nil
	}
	cache := os.Getenv("AMBIENT_TOOLS_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("spire: no home directory for the tools cache: %w", err)
		}
		cache = filepath.Join(home, ".cache", "ambient-agent")
	}
	return filepath.Join(cache, "spire-"+Version, "bin"), nil
}

// RequireBinaries returns the directory of spire-server and spire-agent. When they are missing the test fails
// under CI=true and is skipped otherwise.
func RequireBinaries(t testing.TB) string {
	t.Helper()
	dir, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"spire-server", "spire-agent"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			msg := fmt.Sprintf("%s not found in %s; run tests/tools/build-spire.sh (%v)", b, dir, err)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	return dir
}

// Deployment is a running SPIRE server, and once StartAgent is called, an agent.
type Deployment struct {
	t           testing.TB
	bin, dir    string
	port        int
	TrustDomain spiffeid.TrustDomain
	// ServerSocket is the server's admin API socket; AgentSocket is the agent's Workload API socket.
	ServerSocket, AgentSocket string
}

// StartServer starts spire-server for trustDomain and waits until it is healthy.
func StartServer(t testing.TB, trustDomain string) *Deployment {
	t.Helper()
	bin := RequireBinaries(t)
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are limited to 108 bytes; t.TempDir's can be longer.
	dir, err := os.MkdirTemp("", "spire")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &Deployment{
		t: t, bin: bin, dir: dir, port: freePort(t), TrustDomain: td,
		ServerSocket: filepath.Join(dir, "server.sock"), AgentSocket: filepath.Join(dir, "agent", "api.sock"),
	}
	data := filepath.Join(dir, "server-data")
	conf := d.writeConfig("server.conf", fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "DEBUG"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
}
`, d.port, d.ServerSocket, td.Name(), data, filepath.Join(data, "datastore.sqlite3")))
	d.start("spire-server", "run", "-config", conf)
	d.waitFor(60*time.Second, "spire-server healthy", func() error {
		_, err := d.Server("healthcheck")
		return err
	})
	return d
}

// Server runs a spire-server CLI command against the deployment's server and returns the output. args start
// with the command words ("entry", "create"), then flags; -socketPath is added after the command words.
func (d *Deployment) Server(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	words := 0
	for words < len(args) && !strings.HasPrefix(args[words], "-") {
		words++
	}
	full := append(append(slices.Clip(args[:words]), "-socketPath", d.ServerSocket), args[words:]...)
	out, err := exec.CommandContext(ctx, filepath.Join(d.bin, "spire-server"), full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("spire-server %s: %w: %s", strings.Join(full, " "), err, out)
	}
	return string(out), nil
}

// JoinToken creates a join token and returns it with the SPIFFE ID the agent gets by attesting with it.
func (d *Deployment) JoinToken() (token string, agentID spiffeid.ID) {
	d.t.Helper()
	out, err := d.Server("token", "generate", "-ttl", "600")
	if err != nil {
		d.t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Token: "); ok {
			token = strings.TrimSpace(v)
		}
	}
	if token == "" {
		d.t.Fatalf("no token in %q", out)
	}
	id, err := spiffeid.FromSegments(d.TrustDomain, "spire", "agent", "join_token", token)
	if err != nil {
		d.t.Fatal(err)
	}
	return token, id
}

// RegisterForThisProcess creates a registration entry that gives id to every process of this test's uid
// attested by the agent parent, with X.509 SVIDs living ttl (SPIRE renews them at about half of that).
func (d *Deployment) RegisterForThisProcess(parent, id spiffeid.ID, ttl time.Duration) {
	d.t.Helper()
	_, err := d.Server("entry", "create", "-parentID", parent.String(), "-spiffeID", id.String(),
		"-selector", "unix:uid:"+strconv.Itoa(os.Getuid()), "-x509SVIDTTL", strconv.Itoa(int(ttl.Seconds())))
	if err != nil {
		d.t.Fatal(err)
	}
}

// StartAgent starts spire-agent, attesting with token. It returns at once: the agent's Workload API socket
// appears a second or two later.
func (d *Deployment) StartAgent(token string) {
	d.t.Helper()
	if err := os.MkdirAll(filepath.Dir(d.AgentSocket), 0o755); err != nil {
		d.t.Fatal(err)
	}
	conf := d.writeConfig("agent.conf", fmt.Sprintf(`agent {
  data_dir = %q
  log_level = "DEBUG"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_domain = %q
  insecure_bootstrap = true
  join_token = %q
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, filepath.Join(d.dir, "agent-data"), d.port, d.AgentSocket, d.TrustDomain.Name(), token))
	d.start("spire-agent", "run", "-config", conf)
}

func (d *Deployment) writeConfig(name, text string) string {
	d.t.Helper()
	p := filepath.Join(d.dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		d.t.Fatal(err)
	}
	return p
}

// start runs a SPIRE binary until the test ends: SIGTERM then, SIGKILL 10 s later. Its output goes to
// dir/<name>.log, whose end is shown if the test failed.
func (d *Deployment) start(name string, args ...string) {
	d.t.Helper()
	logPath := filepath.Join(d.dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		d.t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(d.bin, name), args...)
	cmd.Dir = d.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, and killed with the test binary if that dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		d.t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	d.t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logFile.Close()
		if d.t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 4096 {
				b = b[len(b)-4096:]
			}
			d.t.Logf("%s log (end):\n%s", name, b)
		}
	})
}

func (d *Deployment) waitFor(limit time.Duration, what string, cond func() error) {
	d.t.Helper()
	if err := WaitFor(limit, cond); err != nil {
		d.t.Fatalf("%s: %v", what, err)
	}
}

// WaitFor polls cond every 200 ms until it returns nil, or returns its last error after limit.
func WaitFor(limit time.Duration, cond func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", limit, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
