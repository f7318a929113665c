package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Host is one network namespace of a lab.
type Host struct {
	lab   *Lab
	Name  string     // "h1", "h2", ...
	NS    string     // namespace name
	Addr  netip.Addr // IPv4 address on the bridge
	Addr6 netip.Addr // IPv6 address on the bridge
	Dir   string     // a scratch directory for this host's files
	// Socket is where the host's agent serves its control API: hosts share one
	// filesystem, so each has its own. Commands run in the host find it in
	// $AMBIENT_AGENT_SOCKET.
	Socket string

	mu    sync.Mutex
	procs []*Proc
}

// Command returns a command that runs inside the host's namespace.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	// No Pdeathsig: it fires when the forking OS thread exits, and Dial retires
	// threads. If the test binary dies, Sweep kills what ran in its namespaces.
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
	cmd.Env = append(os.Environ(), "AMBIENT_AGENT_SOCKET="+h.Socket)
	return cmd
}

// Run runs a command in the host and returns its combined output.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s on %s: %w: %s", name, h.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (h *Host) MustRun(name string, args ...string) string {
	h.lab.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := h.Run(ctx, name, args...)
	if err != nil {
		h.lab.t.Fatal(err)
	}
	return out
}

// Start starts a long-running command in the host; its output goes to a log file
// that is shown if the test fails. It is stopped when the lab closes.
func (h *Host) Start(label, name string, args ...string) *Proc {
	h.lab.t.Helper()
	return h.start(label, h.Command(context.Background(), name, args...))
}

// StartWithHostSys is Start through nsenter rather than `ip netns exec`,
// which mounts a fresh sysfs and so hides /sys/fs/cgroup: for processes that
// must see the machine's cgroups.
func (h *Host) StartWithHostSys(label, name string, args ...string) *Proc {
	h.lab.t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + h.NS, "--", name}, args...)...)
	cmd.Env = append(os.Environ(), "AMBIENT_AGENT_SOCKET="+h.Socket)
	return h.start(label, cmd)
}

func (h *Host) start(label string, cmd *exec.Cmd) *Proc {
	h.lab.t.Helper()
	logPath := fmt.Sprintf("%s/%s.log", h.Dir, label)
	logFile, err := os.Create(logPath)
	if err != nil {
		h.lab.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		h.lab.t.Fatalf("start %s on %s: %v", cmd.Args, h.Name, err)
	}
	p := &Proc{host: h, Label: label, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p
}

func (h *Host) stopAll(showLogs bool) {
	h.mu.Lock()
	procs := h.procs
	h.mu.Unlock()
	for _, p := range procs {
		p.Kill()
		if showLogs {
			h.lab.t.Logf("--- log of %s on %s ---\n%s", p.Label, h.Name, p.Log())
		}
	}
}

// Dial opens a connection from inside the host's namespace. The socket keeps
// its namespace, so the caller can use it from any goroutine.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.inNetNS(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen opens a listener inside the host's namespace (a server the test
// runs in its own process, reachable by the lab's hosts). The socket keeps
// its namespace.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.inNetNS(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket is Listen for a packet socket (UDP).
func (h *Host) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := h.inNetNS(func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// inNetNS runs fn on an OS thread switched into the host's namespace, then
// switches back. If switching back fails the thread stays locked, and Go
// discards it when the goroutine ends.
func (h *Host) inNetNS(fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(orig)
		fd, err := unix.Open("/run/netns/"+h.NS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- fmt.Errorf("open netns %s: %w", h.NS, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("setns %s: %w", h.NS, err)
			return
		}
		err = fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- err
	}()
	return <-ch
}

// netnsEtc is where `ip netns exec` finds per-namespace files: it bind-mounts
// /etc/netns/<ns>/resolv.conf over /etc/resolv.conf for the commands it runs.
const netnsEtc = "/etc/netns"

// SetResolvConf gives the host its own /etc/resolv.conf (for every command
// started after the call). It is removed with the namespace.
func (h *Host) SetResolvConf(content string) {
	h.lab.t.Helper()
	dir := netnsEtc + "/" + h.NS
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.lab.t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/resolv.conf", []byte(content), 0o644); err != nil {
		h.lab.t.Fatal(err)
	}
}

// DefaultRoute gives the host a default route over its link, as real hosts
// have: traffic to service VIPs needs a route before capture redirects it.
func (h *Host) DefaultRoute() {
	h.lab.t.Helper()
	h.MustRun("ip", "route", "add", "default", "dev", "eth0")
	h.MustRun("ip", "-6", "route", "add", "default", "dev", "eth0")
}
