package capture

// Kernel tests: the rules applied in a fresh network namespace, checked by the
// connections they redirect or let through. They need root; see requireKernel.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"github.com/ambient-agent/ambient-agent/nft"
)

// Ports of the lab: the agent's listeners are the defaults.
const (
	appPort      = "8080"
	excludedPort = "9090" // excluded outbound
	sshPort      = "22"   // excluded inbound
	hbonePort    = "15008"
	excludedUID  = 4242
	excludedGID  = 4343
	otherID      = 4444 // neither uid nor gid is excluded
)

// labSpec captures both ways on lab host a.
func labSpec() nft.Spec {
	return nft.Spec{
		Inbound:               true,
		Outbound:              true,
		Workloads:             []netip.Addr{netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("fd77::1")},
		InboundExcludedPorts:  []uint16{22, 7946, 15000, 15001, 15006, 15008, 15020, 15021, 15053},
		OutboundExcludedPorts: []uint16{9090},
		ExcludedCIDRs:         []netip.Prefix{netip.MustParsePrefix("10.77.0.3/32"), netip.MustParsePrefix("fd77::3/128")},
		ExcludedUIDs:          []uint32{excludedUID},
		ExcludedGIDs:          []uint32{excludedGID},
	}
}

func install(t *testing.T, ns *netNS, spec nft.Spec) *Capture {
	t.Helper()
	c := New(InNetNS(ns.fd))
	if err := c.Install(context.Background(), spec); err != nil {
		t.Fatalf("Install: %v", err)
	}
	return c
}

func join(host, port string) string { return net.JoinHostPort(host, port) }

func addrPort(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func TestOutboundCapture(t *testing.T) {
	l := newLab(t)
	install(t, l.a, labSpec())
	agent := l.a.listen(t, ":15001") // dual-stack, as the agent may bind it
	peer := l.b.listen(t, ":"+appPort)
	peerExcluded := l.b.listen(t, ":"+excludedPort)
	marked := MarkControl(nft.DefaultMark)

	for _, fam := range []struct{ name, peer, excludedPeer string }{
		{"ipv4", "10.77.0.2", "10.77.0.3"},
		{"ipv6", "fd77::2", "fd77::3"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			dst := join(fam.peer, appPort)

			l.a.mustDial(t, dst, nil, nil)
			c := accepted(t, agent, "captured")
			if got, want := origDst(t, c), netip.MustParseAddrPort(dst); got != want {
				t.Errorf("captured: original destination %s, want %s", got, want)
			}
			// REDIRECT sends IPv4 to 127.0.0.1 and IPv6 to ::1: the agent must
			// listen on both loopback addresses.
			if got := addrPort(c.LocalAddr()).Addr(); !got.IsLoopback() || got.Is4() != (fam.name == "ipv4") {
				t.Errorf("captured: arrived at %s, want the %s loopback address", got, fam.name)
			}
			notAccepted(t, peer, "captured")

			l.a.mustDial(t, dst, &identity{uid: otherID, gid: otherID}, nil)
			accepted(t, agent, "another user's connection")
			notAccepted(t, peer, "another user's connection")

			for _, bypass := range []struct {
				what string
				dst  string
				id   *identity
				ctl  func(string, string, syscall.RawConn) error
				ln   *net.TCPListener
			}{
				{"marked socket", dst, nil, marked, peer},
				{"excluded port", join(fam.peer, excludedPort), nil, nil, peerExcluded},
				{"excluded CIDR", join(fam.excludedPeer, appPort), nil, nil, peer},
				{"excluded uid", dst, &identity{uid: excludedUID, gid: otherID}, nil, peer},
				{"excluded gid", dst, &identity{uid: otherID, gid: excludedGID}, nil, peer},
			} {
				l.a.mustDial(t, bypass.dst, bypass.id, bypass.ctl)
				accepted(t, bypass.ln, bypass.what)
				notAccepted(t, agent, bypass.what)
			}
		})
	}
}

func TestOutboundLeavesLocalTrafficAlone(t *testing.T) {
	l := newLab(t)
	install(t, l.a, labSpec())
	agent := l.a.listen(t, ":15001")
	local := l.a.listen(t, ":"+appPort)
	for _, dst := range []string{"127.0.0.1", "::1", "10.77.0.1", "fd77::1"} {
		l.a.mustDial(t, join(dst, appPort), nil, nil)
		accepted(t, local, "to "+dst)
		notAccepted(t, agent, "to "+dst)
	}
	// The agent's own port on loopback is reached as is, not redirected into
	// itself; the original destination of such a connection is its own address.
	l.a.mustDial(t, "127.0.0.1:15001", nil, nil)
	if got := origDst(t, accepted(t, agent, "direct")); got != netip.MustParseAddrPort("127.0.0.1:15001") {
		t.Errorf("direct connection: original destination %s, want 127.0.0.1:15001", got)
	}
}

// With SameHost, a connection of a class's process to a local workload's
// address is captured, to the class's port; the processes of no class,
// loopback, the host's other addresses, the ports inbound capture leaves out
// and the agent's own connections stay alone.
func TestSameHostCapture(t *testing.T) {
	l := newLab(t)
	l.a.ip(t, "addr", "add", "10.77.0.9/24", "dev", "veth0") // on the host, not a workload's
	spec := labSpec()
	spec.SameHost = true
	spec.OutboundClasses = []nft.OutboundClass{{Name: "bob", Port: 15101, UIDs: []uint32{otherID}}}
	install(t, l.a, spec)
	agent, bob := l.a.listen(t, ":15001"), l.a.listen(t, ":15101")
	app, ssh := l.a.listen(t, ":"+appPort), l.a.listen(t, ":"+sshPort)
	bobID := &identity{uid: otherID, gid: otherID}
	for _, w := range []string{"10.77.0.1", "fd77::1"} {
		dst := join(w, appPort)
		l.a.mustDial(t, dst, bobID, nil)
		if got := origDst(t, accepted(t, bob, "bob's connection to workload "+w)); got != netip.MustParseAddrPort(dst) {
			t.Errorf("bob's connection to workload %s: original destination %s, want %s", w, got, dst)
		}
		notAccepted(t, app, "bob's connection to workload "+w)
		l.a.mustDial(t, dst, nil, nil)
		accepted(t, app, "a connection of no class to workload "+w)
		l.a.mustDial(t, dst, bobID, MarkControl(nft.DefaultMark))
		accepted(t, app, "the agent's own connection to workload "+w)
		l.a.mustDial(t, join(w, sshPort), bobID, nil)
		accepted(t, ssh, "bob's connection to workload "+w+" on a port inbound capture leaves out")
	}
	for _, dst := range []string{"127.0.0.1", "::1", "10.77.0.9"} {
		l.a.mustDial(t, join(dst, appPort), bobID, nil)
		accepted(t, app, "bob's connection to "+dst)
	}
	notAccepted(t, agent, "connections delivered on this host")
	notAccepted(t, bob, "uncaptured connections")
}

func TestInboundCapture(t *testing.T) {
	l := newLab(t)
	l.a.ip(t, "addr", "add", "10.77.0.9/24", "dev", "veth0") // on the host, not a workload's
	install(t, l.a, labSpec())
	agent := l.a.listen(t, ":15006") // must be the wildcard: REDIRECT picks the interface's address
	app := l.a.listen(t, ":"+appPort)
	ssh := l.a.listen(t, ":"+sshPort)
	hbone := l.a.listen(t, ":"+hbonePort)

	for _, fam := range []struct{ name, workload string }{
		{"ipv4", "10.77.0.1"},
		{"ipv6", "fd77::1"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			dst := join(fam.workload, appPort)
			client := l.b.mustDial(t, dst, nil, nil)
			c := accepted(t, agent, "captured")
			if got, want := origDst(t, c), netip.MustParseAddrPort(dst); got != want {
				t.Errorf("captured: original destination %s, want %s", got, want)
			}
			// REDIRECT keeps the source: the agent sees the real client.
			if got, want := addrPort(c.RemoteAddr()), addrPort(client.LocalAddr()); got != want {
				t.Errorf("captured: agent sees client %s, want %s", got, want)
			}
			notAccepted(t, app, "captured")

			l.b.mustDial(t, join(fam.workload, sshPort), nil, nil)
			accepted(t, ssh, "excluded port")
			notAccepted(t, agent, "excluded port")

			l.b.mustDial(t, join(fam.workload, hbonePort), nil, nil)
			accepted(t, hbone, "HBONE")
			notAccepted(t, agent, "HBONE")
		})
	}
	l.b.mustDial(t, join("10.77.0.9", appPort), nil, nil)
	accepted(t, app, "not a workload address")
	notAccepted(t, agent, "not a workload address")
}

// TestFailClosed: the agent is down (nothing listens on 15001 or 15006) and its
// table is in place: captured connections are refused, none reaches its
// destination in plaintext.
func TestFailClosed(t *testing.T) {
	l := newLab(t)
	install(t, l.a, labSpec())
	peer := l.b.listen(t, ":"+appPort)
	app := l.a.listen(t, ":"+appPort)
	for _, tc := range []struct {
		what string
		from *netNS
		dst  string
		real *net.TCPListener
	}{
		{"outbound ipv4", l.a, "10.77.0.2", peer},
		{"outbound ipv6", l.a, "fd77::2", peer},
		{"inbound ipv4", l.b, "10.77.0.1", app},
		{"inbound ipv6", l.b, "fd77::1", app},
	} {
		c, err := tc.from.dial(join(tc.dst, appPort), nil, nil)
		if err == nil {
			_ = c.Close()
			t.Errorf("%s: connection to %s succeeded with the agent down", tc.what, tc.dst)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s: got %v, want connection refused", tc.what, err)
		}
		notAccepted(t, tc.real, tc.what)
	}
}

func origDst(t *testing.T, c *net.TCPConn) netip.AddrPort {
	t.Helper()
	dst, err := OriginalDst(c)
	if err != nil {
		t.Fatalf("OriginalDst: %v", err)
	}
	return dst
}

// TestOriginalDstAllocations keeps the per-connection lookup free of garbage: the
// sockaddr is read into the stack.
func TestOriginalDstAllocations(t *testing.T) {
	l := newLab(t)
	install(t, l.a, labSpec())
	agent := l.a.listen(t, ":15001")
	for _, dst := range []string{"10.77.0.2", "fd77::2"} {
		l.a.mustDial(t, join(dst, appPort), nil, nil)
		c := accepted(t, agent, "captured")
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := OriginalDst(c); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > 0 {
			t.Errorf("OriginalDst (%s): %.0f allocations per call, want none", dst, allocs)
		}
	}
}
