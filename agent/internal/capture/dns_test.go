package capture

// Kernel tests of the DNS capture: queries redirected or let through, checked by
// which of two servers answers them, and the table's fail-open lifetime, down to
// a process killed with SIGKILL. They need root; see requireKernel.

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/ambient-agent/ambient-agent/nft"
)

// Who answered a query: every A query gets one address, the answerer's.
var (
	fromProxy    = netip.MustParseAddr("192.0.2.1") // the agent's DNS proxy, 15053
	fromResolver = netip.MustParseAddr("192.0.2.2") // the host's resolver, 53
	fromOther    = netip.MustParseAddr("192.0.2.3") // a proxy on another port
	fromRemote   = netip.MustParseAddr("192.0.2.4") // a DNS server on lab host b
	fromNobody   = netip.Addr{}
)

// dnsHost is lab host a with a DNS proxy on 127.0.0.1 and ::1 port 15053 and a
// resolver on port 53 of the same addresses; lab host b runs a remote DNS server
// on 10.77.0.2 and fd77::2 port 53.
func dnsHost(t *testing.T) *netNS {
	t.Helper()
	l := newLab(t)
	for _, host := range []string{"127.0.0.1", "::1"} {
		l.a.serveDNS(t, join(host, "15053"), fromProxy)
		l.a.serveDNS(t, join(host, "53"), fromResolver)
	}
	for _, host := range []string{"10.77.0.2", "fd77::2"} {
		l.b.serveDNS(t, join(host, "53"), fromRemote)
	}
	// Until the link-local addresses have passed duplicate address detection,
	// neighbour discovery, and thus IPv6 to host b, does not work yet.
	for deadline := time.Now().Add(5 * time.Second); l.a.query(t, "udp", "[fd77::2]:53", false) != fromRemote; {
		if time.Now().After(deadline) {
			t.Fatal("IPv6 between the lab hosts does not work after 5s")
		}
	}
	return l.a
}

// serveDNS answers A queries with answer on addr, UDP and TCP, in the namespace.
func (ns *netNS) serveDNS(t *testing.T, addr string, answer netip.Addr) {
	t.Helper()
	handler := mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		resp := new(mdns.Msg).SetReply(req)
		q := req.Question[0]
		resp.Answer = []mdns.RR{&mdns.A{
			Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 1},
			A:   answer.AsSlice(),
		}}
		_ = w.WriteMsg(resp)
	})
	var pc net.PacketConn
	var ln net.Listener
	err := ns.do(nil, func() (err error) {
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns.name, err)
	}
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.ActivateAndServe()
		}()
		t.Cleanup(func() {
			_ = srv.Shutdown()
			<-done
		})
	}
}

// query asks for test.example. over network ("udp" or "tcp") to addr from inside
// the namespace, with the agent's mark if marked, and says who answered.
func (ns *netNS) query(t *testing.T, network, addr string, marked bool) netip.Addr {
	t.Helper()
	d := &net.Dialer{Timeout: 2 * time.Second}
	if marked {
		d.Control = MarkControl(nft.DefaultMark)
	}
	client := &mdns.Client{Net: network, Dialer: d, Timeout: 2 * time.Second}
	req := new(mdns.Msg).SetQuestion("test.example.", mdns.TypeA)
	var resp *mdns.Msg
	err := ns.do(nil, func() error {
		// The socket is made here, in the namespace; it stays there.
		conn, err := client.Dial(addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		resp, _, err = client.ExchangeWithConn(req, conn)
		return err
	})
	if err != nil {
		return fromNobody
	}
	if len(resp.Answer) != 1 {
		t.Fatalf("query %s %s: answer %v", network, addr, resp.Answer)
	}
	a, _ := netip.AddrFromSlice(resp.Answer[0].(*mdns.A).A)
	return a.Unmap()
}

type dnsCase struct {
	network, addr string
	marked        bool
	want          netip.Addr
}

func (ns *netNS) checkQueries(t *testing.T, when string, cases []dnsCase) {
	t.Helper()
	name := map[netip.Addr]string{fromProxy: "the proxy", fromResolver: "the resolver", fromRemote: "the remote server",
		fromOther: "the proxy on another port", fromNobody: "nobody"}
	for _, c := range cases {
		if got := ns.query(t, c.network, c.addr, c.marked); got != c.want {
			t.Errorf("%s: %s query to %s (marked: %v) answered by %s, want %s", when, c.network, c.addr, c.marked, name[got], name[c.want])
		}
	}
}

// notCaptured: every query reaches the address it was sent to.
var notCaptured = []dnsCase{
	{"udp", "127.0.0.1:53", false, fromResolver},
	{"tcp", "127.0.0.1:53", false, fromResolver},
	{"udp", "[::1]:53", false, fromResolver},
	{"udp", "10.77.0.2:53", false, fromRemote},
	{"tcp", "[fd77::2]:53", false, fromRemote},
}

func TestDNSCapture(t *testing.T) {
	ns := dnsHost(t)
	ns.checkQueries(t, "before", notCaptured)

	d, err := InstallDNS(nft.DNSSpec{IPv6: true}, InNetNS(ns.fd))
	if err != nil {
		t.Fatalf("InstallDNS: %v", err)
	}
	checkDNSListed(t, ns, d)
	ns.checkQueries(t, "captured", []dnsCase{
		{"udp", "10.77.0.2:53", false, fromProxy},
		{"tcp", "10.77.0.2:53", false, fromProxy},
		{"udp", "[fd77::2]:53", false, fromProxy},
		{"tcp", "[fd77::2]:53", false, fromProxy},
		{"udp", "127.0.0.1:53", false, fromProxy},
		{"tcp", "[::1]:53", false, fromProxy},
		// The proxy's own upstream queries carry the mark.
		{"udp", "127.0.0.1:53", true, fromResolver},
		{"tcp", "127.0.0.1:53", true, fromResolver},
		{"udp", "[::1]:53", true, fromResolver},
		{"udp", "10.77.0.2:53", true, fromRemote},
		{"tcp", "[fd77::2]:53", true, fromRemote},
		// Not port 53: the proxy itself, reached directly.
		{"udp", "127.0.0.1:15053", false, fromProxy},
	})

	for i := range 2 {
		if err := d.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	checkNoDNSTable(t, ns)
	ns.checkQueries(t, "after Close", notCaptured)
}

func TestDNSCaptureIPv4Only(t *testing.T) {
	ns := dnsHost(t)
	d, err := InstallDNS(nft.DNSSpec{}, InNetNS(ns.fd))
	if err != nil {
		t.Fatalf("InstallDNS: %v", err)
	}
	defer d.Close()
	checkDNSListed(t, ns, d)
	ns.checkQueries(t, "IPv4 only", []dnsCase{
		{"udp", "127.0.0.1:53", false, fromProxy},
		{"tcp", "10.77.0.2:53", false, fromProxy},
		{"udp", "[::1]:53", false, fromResolver},
		{"tcp", "[::1]:53", false, fromResolver},
	})
}

// TestDNSCaptureOtherMarkAndPort: the spec's mark and port are the ones used.
func TestDNSCaptureOtherMarkAndPort(t *testing.T) {
	ns := dnsHost(t)
	for _, host := range []string{"127.0.0.1", "::1"} {
		ns.serveDNS(t, join(host, "16053"), fromOther) // 0.0.0.1 stands for "the other proxy"
	}
	d, err := InstallDNS(nft.DNSSpec{Mark: 0x10000, Port: 16053, IPv6: true}, InNetNS(ns.fd))
	if err != nil {
		t.Fatalf("InstallDNS: %v", err)
	}
	defer d.Close()
	checkDNSListed(t, ns, d)
	if got := ns.query(t, "udp", "127.0.0.1:53", false); got != fromOther {
		t.Errorf("query to 127.0.0.1:53 answered by %s, want the proxy on port 16053", got)
	}
	// The default mark no longer bypasses.
	if got := ns.query(t, "udp", "127.0.0.1:53", true); got != fromOther {
		t.Errorf("query with mark 0x%x answered by %s, want the proxy on port 16053", nft.DefaultMark, got)
	}
}

// TestDNSCaptureLeavesOtherTablesAlone: the main table and a foreign one are
// untouched by InstallDNS and Close, and neither a second InstallDNS nor nft can
// touch the table the first one owns.
func TestDNSCaptureLeavesOtherTablesAlone(t *testing.T) {
	ns := dnsHost(t)
	ns.mustNft(t, foreignTable, "-f", "-")
	install(t, ns, labSpec())
	before := listTables(t, ns)

	d, err := InstallDNS(nft.DNSSpec{}, InNetNS(ns.fd))
	if err != nil {
		t.Fatalf("InstallDNS: %v", err)
	}
	owned := ns.mustNft(t, "", "-j", "list", "table", "inet", nft.DNSTableName)
	_, err = InstallDNS(nft.DNSSpec{}, InNetNS(ns.fd))
	if err == nil || !strings.Contains(err.Error(), "another running process owns the table") {
		t.Errorf("second InstallDNS: got %v, want an error saying another process owns the table", err)
	}
	// Nor can anyone else change it.
	if _, err := ns.nft("", "delete", "table", "inet", nft.DNSTableName); err == nil {
		t.Error("nft delete table: the owned table was deleted by another process")
	}
	if now := ns.mustNft(t, "", "-j", "list", "table", "inet", nft.DNSTableName); now != owned {
		t.Errorf("a second InstallDNS or nft changed the table\n--- before\n%s\n--- after\n%s", owned, now)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if after := listTables(t, ns); after != before {
		t.Errorf("the other tables changed\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// TestDNSCaptureRefusesHandMadeTable: a table of our name without an owner (made
// with nft) is neither taken over nor deleted.
func TestDNSCaptureRefusesHandMadeTable(t *testing.T) {
	ns := dnsHost(t)
	ns.mustNft(t, "", "add", "table", "inet", nft.DNSTableName)
	_, err := InstallDNS(nft.DNSSpec{}, InNetNS(ns.fd))
	if err == nil || !strings.Contains(err.Error(), "nft delete table inet "+nft.DNSTableName) {
		t.Errorf("InstallDNS over a hand-made table: got %v, want an error saying how to delete it", err)
	}
	ns.mustNft(t, "", "list", "table", "inet", nft.DNSTableName)
}

// TestDNSCaptureFailsOpen: a process that installed the table is killed with
// SIGKILL, so nothing of it runs any cleanup, and the kernel deletes the table.
func TestDNSCaptureFailsOpen(t *testing.T) {
	ns := dnsHost(t)
	ns.mustNft(t, foreignTable, "-f", "-")
	install(t, ns, labSpec())
	before := listTables(t, ns)

	child := exec.Command(os.Args[0], "-test.run=^TestDNSCaptureHelperProcess$", "-test.count=1")
	child.Env = append(os.Environ(), helperEnv+"="+netnsDir+"/"+ns.name)
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "installed\n" {
		t.Fatalf("helper process: read %q, %v", line, err)
	}
	if f := dnsTableFlags(t, ns); f != 0x2 {
		t.Errorf("table flags 0x%x, want owner (0x2) only", f)
	}
	ns.checkQueries(t, "helper alive", []dnsCase{
		{"udp", "127.0.0.1:53", false, fromProxy},
		// The DNS chain runs before the main table's outbound chain...
		{"tcp", "10.77.0.2:53", false, fromProxy},
		// ...which takes what the DNS chain lets through (IPv6: the helper
		// captures IPv4 only), and has no listener here.
		{"tcp", "[fd77::2]:53", false, fromNobody},
	})

	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	deadline := time.Now().Add(2 * time.Second)
	for dnsTableFlags(t, ns) >= 0 {
		if time.Now().After(deadline) {
			t.Fatalf("table inet %s still there 2s after its owner was killed", nft.DNSTableName)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ns.checkQueries(t, "helper killed", []dnsCase{
		{"udp", "127.0.0.1:53", false, fromResolver},
		{"tcp", "127.0.0.1:53", false, fromResolver},
		{"udp", "[::1]:53", false, fromResolver},
		{"udp", "10.77.0.2:53", false, fromRemote},
		// The main table still captures outbound TCP, and fails closed.
		{"tcp", "10.77.0.2:53", false, fromNobody},
	})
	if after := listTables(t, ns); after != before {
		t.Errorf("the other tables changed\n--- before\n%s\n--- after\n%s", before, after)
	}
}

const helperEnv = "AMBIENT_AGENT_TEST_DNS_CAPTURE_NETNS"

// TestDNSCaptureHelperProcess is the process TestDNSCaptureFailsOpen kills: it
// installs the DNS table in the namespace named by helperEnv, says so, and waits.
// Run any other way, it does nothing.
func TestDNSCaptureHelperProcess(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		return
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InstallDNS(nft.DNSSpec{}, InNetNS(fd)); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("installed\n")
	time.Sleep(time.Minute)
	t.Fatal("not killed within a minute")
}

// dnsTableFlags reads the DNS table's flags through netlink (google/nftables), -1
// when there is no such table.
func dnsTableFlags(t *testing.T, ns *netNS) int64 {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == nft.DNSTableName {
			// google/nftables reads the flags in host order; the kernel sends
			// them in network order.
			return int64(binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, tb.Flags)))
		}
	}
	return -1
}

func checkNoDNSTable(t *testing.T, ns *netNS) {
	t.Helper()
	if f := dnsTableFlags(t, ns); f >= 0 {
		t.Errorf("table inet %s still there", nft.DNSTableName)
	}
}

// checkDNSListed compares what nft reads back from the kernel with the rendering.
func checkDNSListed(t *testing.T, ns *netNS, d *DNSCapture) {
	t.Helper()
	listed := ns.mustNft(t, "", "list", "table", "inet", nft.DNSTableName)
	progname := regexp.MustCompile(`\{ # progname \S+`)
	if got, want := oneLine(progname.ReplaceAllString(listed, "{")), oneLine(d.Installed().String()); got != want {
		t.Errorf("the kernel holds another DNS table than the one rendered\n--- nft list\n%s\n--- rendered\n%s", listed, d.Installed())
	}
}

// listTables lists the main table and the foreign one, handles included: a table
// deleted and made again would get new ones.
func listTables(t *testing.T, ns *netNS) string {
	t.Helper()
	return ns.mustNft(t, "", "-j", "list", "table", "inet", "filter") +
		ns.mustNft(t, "", "-j", "list", "table", "inet", nft.TableName)
}

func TestInstallDNSRejectsInvalidSpec(t *testing.T) {
	_, err := InstallDNS(nft.DNSSpec{Port: 53})
	if err == nil || !strings.Contains(err.Error(), "Port 53") {
		t.Fatalf("InstallDNS: got %v, want an error naming Port 53", err)
	}
}
