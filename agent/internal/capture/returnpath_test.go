package capture

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/nft"
	"github.com/ambient-agent/ambient-agent/ports"
)

// The return path in the kernel: an application on a host address sees the client's address when the agent connects
// from it (IP_TRANSPARENT), IPv4 and IPv6; without ReturnPath the replies leave the host and the connection never
// opens; Install twice and Remove leave the rules and routes exactly as they were.
func TestReturnPathShowsTheClient(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t)
	ns.ip(t, "link", "add", "host0", "type", "veth", "peer", "name", "wire0")
	for _, dev := range []string{"host0", "wire0"} { // no link-local addresses coming up while the test compares
		ns.ip(t, "link", "set", dev, "addrgenmode", "none")
		ns.ip(t, "link", "set", dev, "up")
	}
	ns.ip(t, "addr", "add", "10.0.0.1/24", "dev", "host0")
	ns.ip(t, "addr", "add", "fd00::1/64", "dev", "host0", "nodad")
	ns.ip(t, "route", "add", "default", "dev", "host0")
	ns.ip(t, "-6", "route", "add", "default", "dev", "host0")
	// The capture table keeps the transparent socket's mark (the agent's and the return path's bits) on its
	// connection, and puts it on the application's replies (nft.Spec.ReturnMark).
	if err := New(InNetNS(ns.fd)).Install(context.Background(), nft.Spec{ReturnMark: ports.ReturnMark}); err != nil {
		t.Fatal(err)
	}
	p := AgentReturnPath(0)
	p.Table = 15079
	mark := p.Mark
	before := ns.routing(t)

	for _, tc := range []struct{ app, client string }{{"10.0.0.1:8080", "192.0.2.7"}, {"[fd00::1]:8080", "2001:db8::7"}} {
		app := ns.listen(t, tc.app)
		go echoPeer(app)
		// Without the return path the application's replies are dropped by the table: none leaves the host.
		sent := ns.leaving(t, tc.client)
		if got, err := ns.dialFrom(tc.app, tc.client, 0, mark); err == nil {
			t.Fatalf("without the return path, a transparent connection to %s opened (peer %s): the test proves nothing", tc.app, got)
		}
		if now := ns.leaving(t, tc.client); now != sent {
			t.Errorf("without the return path, %d packets left the host towards the client %s, want none", now-sent, tc.client)
		}
		if err := ns.do(nil, p.Install); err != nil {
			t.Fatal(err)
		}
		if err := ns.do(nil, p.Install); err != nil { // again: a restart installs over what it left
			t.Fatalf("second install: %v", err)
		}
		got, err := ns.dialFrom(tc.app, tc.client, 0, mark)
		if err != nil || got != tc.client {
			t.Errorf("application %s saw the client as %q (%v), want %s", tc.app, got, err, tc.client)
		}
		var installed bool
		if err := ns.do(nil, func() (err error) { installed, err = p.Installed(); return err }); err != nil || !installed {
			t.Errorf("Installed: %v, %v", installed, err)
		}
		if err := ns.do(nil, p.Remove); err != nil {
			t.Fatal(err)
		}
		if after := ns.routing(t); after != before {
			t.Errorf("Remove left the routing changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	}
	if err := ns.do(nil, p.Remove); err != nil { // nothing left to remove: not an error
		t.Errorf("Remove with nothing installed: %v", err)
	}
	// What an agent with another capture mark installed is removed too (cleanup does not know that mark).
	other := AgentReturnPath(0x10000)
	other.Table = p.Table
	if err := ns.do(nil, other.Install); err != nil {
		t.Fatal(err)
	}
	if err := ns.do(nil, p.Remove); err != nil {
		t.Fatal(err)
	}
	if after := ns.routing(t); after != before {
		t.Errorf("Remove left another mark's return path:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if err := ns.do(nil, ReturnPath{Mark: mark, Mask: mark, Table: 254, Priority: 1}.Install); err == nil {
		t.Error("a return path into the main table was installed")
	}
}

// echoPeer answers each connection with the address it came from, as the application sees it.
func echoPeer(ln *net.TCPListener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		_, _ = c.Write([]byte(host))
		_ = c.Close()
	}
}

// dialFrom connects to addr from the client address, transparently, with mark, and returns what the application
// says the peer is.
func (ns *netNS) dialFrom(addr, client string, port int, mark uint32) (string, error) {
	var got string
	err := ns.do(nil, func() error {
		network := "tcp4"
		if strings.Contains(client, ":") {
			network = "tcp6"
		}
		d := net.Dialer{Timeout: time.Second, Control: TransparentControl(mark), LocalAddr: &net.TCPAddr{IP: net.ParseIP(client), Port: port}}
		c, err := d.Dial(network, addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 64)
		n, err := c.Read(b)
		got = string(b[:n])
		return err
	})
	return got, err
}

// routing is the namespace's policy rules and routes of every table, both families.
func (ns *netNS) routing(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"-4", "rule"}, {"-6", "rule"}, {"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"}} {
		out, err := exec.Command("ip", append([]string{"-n", ns.name}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		b.Write(out)
	}
	return b.String()
}

// leaving counts the packets to client that left through host0 so far: a counter in a table of the test's own,
// after every chain of ours.
func (ns *netNS) leaving(t *testing.T, client string) int {
	t.Helper()
	family := "ip"
	if strings.Contains(client, ":") {
		family = "ip6"
	}
	chain := "to_" + strings.NewReplacer(".", "_", ":", "_").Replace(client)
	if _, err := ns.nft("", "list", "chain", "inet", "probe", chain); err != nil {
		ns.mustNft(t, fmt.Sprintf("table inet probe {\n chain %s {\n type filter hook postrouting priority 100;\n oifname \"host0\" %s daddr %s counter\n }\n}\n", chain, family, client), "-f", "-")
	}
	out := ns.mustNft(t, "", "list", "chain", "inet", "probe", chain)
	m := regexp.MustCompile(`counter packets (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no counter in:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// The agent's connection from a client's address may get the very source port of one of that client's redirected
// connections to the same application: the kernel picks the port among the host's own sockets, not among the
// connections it tracks. Without the zone table the two are one conntrack entry, and the client's connection is
// reset; with it both work. The port is forced here, IPv4 and IPv6. The zone table is what the kernel holds.
func TestTransparentConnectionBesideTheClientsOwn(t *testing.T) {
	l := newLab(t)
	spec := labSpec()
	spec.ReturnMark = ports.ReturnMark
	install(t, l.a, spec)
	p := AgentReturnPath(0)
	if err := l.a.do(nil, p.Install); err != nil {
		t.Fatal(err)
	}
	zone, err := ReturnZone(p.Mark, InNetNS(l.a.fd))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = zone.Close() })
	rs, _ := nft.RenderZone(p.Mark)
	listed := l.a.mustNft(t, "", "list", "table", "inet", nft.ZoneTableName)
	if got, want := oneLine(regexp.MustCompile(`\{ # progname \S+`).ReplaceAllString(listed, "{")), oneLine(rs.String()); got != want {
		t.Errorf("the kernel holds another zone table than the one rendered\n--- nft list\n%s\n--- rendered\n%s", listed, rs)
	}
	agent := l.a.listen(t, ":15006")
	for _, tc := range []struct{ app, client string }{{"10.77.0.1:8080", "10.77.0.2"}, {"[fd77::1]:8080", "fd77::2"}} {
		app := l.a.listen(t, tc.app)
		go echoPeer(app)
		const port = 41007
		var redirected net.Conn
		if err := l.b.do(nil, func() (err error) {
			d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(tc.client), Port: port}}
			redirected, err = d.Dial("tcp", tc.app)
			return err
		}); err != nil {
			t.Fatalf("client %s -> %s: %v", tc.client, tc.app, err)
		}
		defer redirected.Close()
		fromClient := accepted(t, agent, "the client's connection, redirected")
		got, err := l.a.dialFrom(tc.app, tc.client, port, p.Mark)
		if err != nil || got != tc.client {
			t.Errorf("the agent's connection from [%s]:%d to %s: the application saw %q (%v), want %s", tc.client, port, tc.app, got, err, tc.client)
		}
		notAccepted(t, agent, "the agent's own connection")
		// The client's connection is still the agent's: what it sends arrives there.
		if _, err := redirected.Write([]byte("still here")); err != nil {
			t.Fatalf("client %s: write: %v", tc.client, err)
		}
		_ = fromClient.SetReadDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 64)
		if n, err := fromClient.Read(b); err != nil || string(b[:n]) != "still here" {
			t.Errorf("client %s's redirected connection, beside the agent's own from its address and port: read %q (%v), want %q",
				tc.client, b[:n], err, "still here")
		}
	}
}
