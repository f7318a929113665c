package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Prefix starts the name of every namespace a lab creates.
const Prefix = "aalab-"

// Subnet addressing of lab hosts: host i (from 1) is 10.77.0.(10+i) and fd77::(10+i).
var (
	subnet4 = netip.MustParsePrefix("10.77.0.0/24")
	subnet6 = netip.MustParsePrefix("fd77::/64")
)

// Lab is a set of hosts on one bridge.
type Lab struct {
	t      T
	ID     string // unique per run: "<pid>-<rand>"
	sw     string // the namespace holding the bridge
	dir    string
	Hosts  []*Host
	closed bool
	ca     ca
}

// New creates a lab of n hosts, each with addresses on a shared bridge. It is
// torn down when the test ends.
func New(t T, n int) *Lab {
	t.Helper()
	Require(t)
	Sweep()
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	l := &Lab{t: t, ID: strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(rnd[:]), dir: t.TempDir()}
	t.Cleanup(l.Close)
	l.sw = l.nsName("sw")
	l.mustIP("netns", "add", l.sw)
	l.mustIP("-n", l.sw, "link", "add", "br0", "type", "bridge")
	l.mustIP("-n", l.sw, "link", "set", "br0", "up")
	l.mustIP("-n", l.sw, "link", "set", "lo", "up")
	for i := 1; i <= n; i++ {
		l.addHost(i)
	}
	return l
}

// ctx bounds a lab command.
func (l *Lab) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	l.t.Cleanup(cancel)
	return ctx
}

func (l *Lab) nsName(suffix string) string { return Prefix + l.ID + "-" + suffix }

func (l *Lab) addHost(i int) {
	h := &Host{
		lab:   l,
		Name:  fmt.Sprintf("h%d", i),
		Addr:  hostAddr(subnet4, 10+i),
		Addr6: hostAddr(subnet6, 10+i),
	}
	h.NS = l.nsName(h.Name)
	h.Dir = l.dir + "/" + h.Name
	// Short (a socket path has at most 107 bytes), unique per lab and host.
	h.Socket = filepath.Join(os.TempDir(), h.NS+".sock")
	l.t.Cleanup(func() { os.Remove(h.Socket) })
	if err := os.MkdirAll(h.Dir, 0o755); err != nil {
		l.t.Fatal(err)
	}
	l.mustIP("netns", "add", h.NS)
	// The veth pair is created inside the switch namespace and one end moved to
	// the host: no link ever exists in the machine's own namespace.
	l.mustIP("-n", l.sw, "link", "add", h.Name, "type", "veth", "peer", "name", "eth0", "netns", h.NS)
	l.mustIP("-n", l.sw, "link", "set", h.Name, "master", "br0", "up")
	l.mustIP("-n", h.NS, "link", "set", "lo", "up")
	l.mustIP("-n", h.NS, "addr", "add", h.Addr.String()+"/24", "dev", "eth0")
	l.mustIP("-n", h.NS, "addr", "add", h.Addr6.String()+"/64", "dev", "eth0", "nodad")
	l.mustIP("-n", h.NS, "link", "set", "eth0", "up")
	l.Hosts = append(l.Hosts, h)
}

func hostAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Addr().As16()
	if p.Addr().Is4() {
		b := p.Addr().As4()
		b[3] = byte(n)
		return netip.AddrFrom4(b)
	}
	a[15] = byte(n)
	return netip.AddrFrom16(a)
}

// Namespaces lists the lab's namespaces that exist now.
func (l *Lab) Namespaces() []string { return namespacesWithPrefix(Prefix + l.ID + "-") }

// Close stops every process and removes every namespace of the lab. It is safe
// to call more than once; tests call it to check that nothing is left.
func (l *Lab) Close() {
	if l.closed {
		return
	}
	l.closed = true
	for _, h := range l.Hosts {
		h.stopAll(l.t.Failed())
	}
	for _, ns := range l.Namespaces() {
		removeNamespace(ns)
	}
}

func (l *Lab) mustIP(args ...string) {
	l.t.Helper()
	if out, err := ip(args...); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func ip(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "ip", args...).CombinedOutput()
}

// Sweep removes the namespaces of labs whose test process no longer exists.
func Sweep() {
	for _, ns := range namespacesWithPrefix(Prefix) {
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(ns, Prefix), "-", 2)[0])
		if err == nil && processAlive(pid) {
			continue
		}
		removeNamespace(ns)
	}
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// removeNamespace kills what runs in ns, then deletes it.
func removeNamespace(ns string) {
	if out, err := ip("netns", "pids", ns); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	_, _ = ip("netns", "del", ns)
	_ = os.RemoveAll(filepath.Join(netnsEtc, ns))
}

func namespacesWithPrefix(prefix string) []string {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// RootLinksContaining lists links of the machine's own namespace whose name
// contains s (tests use it to show that the lab added none).
func RootLinksContaining(s string) []string {
	out, _ := ip("-o", "link", "show")
	var links []string
	for _, line := range bytes.Split(out, []byte("\n")) {
		if bytes.Contains(line, []byte(s)) {
			links = append(links, string(line))
		}
	}
	return links
}

// Timeout returns a context for one command; it is cancelled by the deadline.
func Timeout(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	time.AfterFunc(d, cancel)
	return ctx
}

// SetLink brings host h's port on the switch up or down: down cuts the host
// off the network without touching anything inside it.
func (l *Lab) SetLink(h *Host, up bool) {
	l.t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	l.mustIP("-n", l.sw, "link", "set", h.Name, state)
}

// AddNetwork joins hosts on a second bridge of their own, name, with addresses in prefix (host hN gets the
// prefix's address 10+N on its link "eth-<name>"), and returns each host's address there. Hosts not on it have
// no route to it: a network the others cannot reach, as a data centre's is to another's. Its hosts answer ARP
// only for the addresses of the link asked on (arp_ignore 1), so a host with an on-link default route on the
// transit cannot reach their addresses there either.
func (l *Lab) AddNetwork(name string, prefix netip.Prefix, hosts ...*Host) []netip.Addr {
	l.t.Helper()
	br := "br-" + name
	l.mustIP("-n", l.sw, "link", "add", br, "type", "bridge")
	l.mustIP("-n", l.sw, "link", "set", br, "up")
	link := "eth-" + name
	var out []netip.Addr
	for _, h := range hosts {
		n, err := strconv.Atoi(strings.TrimPrefix(h.Name, "h"))
		if err != nil {
			l.t.Fatalf("host %s: %v", h.Name, err)
		}
		a := hostAddr(prefix, 10+n)
		port := h.Name + "-" + name
		l.mustIP("-n", l.sw, "link", "add", port, "type", "veth", "peer", "name", link, "netns", h.NS)
		l.mustIP("-n", l.sw, "link", "set", port, "master", br, "up")
		l.mustIP("-n", h.NS, "addr", "add", fmt.Sprintf("%s/%d", a, prefix.Bits()), "dev", link)
		l.mustIP("-n", h.NS, "link", "set", link, "up")
		l.mustIP("netns", "exec", h.NS, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1")
		out = append(out, a)
	}
	return out
}
