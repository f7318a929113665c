package capture

// Helpers of the kernel tests: throwaway network namespaces with a veth pair,
// sockets opened inside them, and the nft and ip commands run there.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nsPrefix starts the name of every namespace these tests create, followed by the
// pid of the test process: a sweep removes those whose process is gone.
const nsPrefix = "aacap-"

const netnsDir = "/run/netns"

// requireKernel skips a test that needs root and the ip and nft commands, except
// under CI=true, where a test that cannot run fails: a skip would look like a pass.
func requireKernel(t *testing.T) {
	t.Helper()
	stop := t.Skipf
	if os.Getenv("CI") == "true" {
		stop = t.Fatalf
	}
	if os.Geteuid() != 0 {
		stop("kernel test: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN for network namespaces)")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			stop("kernel test: needs %s (Debian packages iproute2 and nftables): %v", bin, err)
		}
	}
	sweepNamespaces(t)
}

// sweepNamespaces deletes namespaces left by test processes that died before
// their cleanup ran. Namespaces of live processes (a concurrent go test) stay.
func sweepNamespaces(t *testing.T) {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return // no named namespace at all
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		if pid, err := strconv.Atoi(pidText); err == nil && unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		if out, err := exec.Command("ip", "netns", "delete", e.Name()).CombinedOutput(); err != nil {
			t.Logf("sweep: ip netns delete %s: %v: %s", e.Name(), err, out)
		}
	}
}

// netNS is a named network namespace that lives as long as the test.
type netNS struct {
	name string
	fd   int
}

func newNetNS(t *testing.T) *netNS {
	t.Helper()
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := fmt.Sprintf("%s%d-%s", nsPrefix, os.Getpid(), hex.EncodeToString(suffix))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &netNS{name: name, fd: -1}
	t.Cleanup(func() {
		if ns.fd >= 0 {
			_ = unix.Close(ns.fd)
		}
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	fd, err := unix.Open(netnsDir+"/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	ns.fd = fd
	ns.ip(t, "link", "set", "lo", "up")
	return ns
}

// ip runs `ip -n NS args...`.
func (ns *netNS) ip(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns.name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", ns.name, strings.Join(args, " "), err, out)
	}
}

// nft runs nft inside the namespace, with stdin, and returns its output.
func (ns *netNS) nft(stdin string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name, "nft"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func (ns *netNS) mustNft(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := ns.nft(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// identity is the owner a socket is created with (its fsuid and fsgid).
type identity struct{ uid, gid int }

// do runs fn on an OS thread that has entered the namespace (and taken on id, if
// not nil). The thread stays locked, so the runtime ends it with the goroutine:
// the namespace and identity never reach other goroutines.
func (ns *netNS) do(id *identity, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.name, err)
			return
		}
		if id != nil {
			// setfsuid and setfsgid act on the calling thread only.
			if err := unix.Setfsgid(id.gid); err != nil {
				errc <- fmt.Errorf("setfsgid %d: %w", id.gid, err)
				return
			}
			if err := unix.Setfsuid(id.uid); err != nil {
				errc <- fmt.Errorf("setfsuid %d: %w", id.uid, err)
				return
			}
		}
		errc <- fn()
	}()
	return <-errc
}

func (ns *netNS) listen(t *testing.T, addr string) *net.TCPListener {
	t.Helper()
	var ln net.Listener
	err := ns.do(nil, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns.name, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln.(*net.TCPListener)
}

// dial connects from inside the namespace. control, if not nil, runs on the
// socket before it connects; id, if not nil, owns the socket.
func (ns *netNS) dial(addr string, id *identity, control func(string, string, syscall.RawConn) error) (*net.TCPConn, error) {
	var c net.Conn
	err := ns.do(id, func() (err error) {
		d := net.Dialer{Timeout: 3 * time.Second, Control: control}
		c, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func (ns *netNS) mustDial(t *testing.T, addr string, id *identity, control func(string, string, syscall.RawConn) error) *net.TCPConn {
	t.Helper()
	c, err := ns.dial(addr, id, control)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ns.name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// accepted waits briefly for the connection that a dial just completed: the
// kernel has queued it already if it went to ln.
func accepted(t *testing.T, ln *net.TCPListener, what string) *net.TCPConn {
	t.Helper()
	_ = ln.SetDeadline(time.Now().Add(2 * time.Second))
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("%s: no connection on %s: %v", what, ln.Addr(), err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// notAccepted checks that no connection is waiting on ln.
func notAccepted(t *testing.T, ln *net.TCPListener, what string) {
	t.Helper()
	_ = ln.SetDeadline(time.Now().Add(100 * time.Millisecond))
	c, err := ln.AcceptTCP()
	if err == nil {
		_ = c.Close()
		t.Fatalf("%s: unexpected connection on %s from %s", what, ln.Addr(), c.RemoteAddr())
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: accept on %s: %v", what, ln.Addr(), err)
	}
}

// lab is two hosts on one link: a, where the agent captures, and b, a peer.
//
//	a: veth0 10.77.0.1/24 fd77::1/64 ---- b: veth0 10.77.0.2, .3/24 fd77::2, ::3/64
type lab struct{ a, b *netNS }

func newLab(t *testing.T) lab {
	t.Helper()
	requireKernel(t)
	l := lab{a: newNetNS(t), b: newNetNS(t)}
	l.a.ip(t, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", l.b.name)
	for _, side := range []struct {
		ns    *netNS
		addrs []string
	}{
		{l.a, []string{"10.77.0.1/24", "fd77::1/64"}},
		{l.b, []string{"10.77.0.2/24", "10.77.0.3/24", "fd77::2/64", "fd77::3/64"}},
	} {
		for _, a := range side.addrs {
			side.ns.ip(t, "addr", "add", a, "dev", "veth0", "nodad")
		}
		side.ns.ip(t, "link", "set", "veth0", "up")
	}
	return l
}
