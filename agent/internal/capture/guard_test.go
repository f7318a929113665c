package capture

// Kernel tests of the guard (nft.Spec.GuardListeners): redirected connections
// reach the agent's marked listeners only. They need root; see requireKernel.

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/ambient-agent/ambient-agent/nft"
)

// classID owns the processes of the lab's one workload class.
const classID = 4545

func guardSpec() nft.Spec {
	spec := labSpec()
	spec.GuardListeners = true
	spec.OutboundClasses = []nft.OutboundClass{{Name: "web", Port: 15101, UIDs: []uint32{classID}}}
	return spec
}

// TestGuard: a listener without the agent's mark on one of the agent's ports
// (what a local user could open while the agent is down) gets no redirected
// connection, and the client is refused as if nothing listened; the same listener
// with the mark gets it.
func TestGuard(t *testing.T) {
	l := newLab(t)
	install(t, l.a, guardSpec())
	peer := l.b.listen(t, ":"+appPort)
	app := l.a.listen(t, ":"+appPort)
	class := &identity{uid: classID, gid: classID}

	for _, tc := range []struct {
		what string
		port string // the agent's, where the connection is redirected
		from *netNS
		dst  string
		id   *identity
		real *net.TCPListener // the original destination, which must get nothing
	}{
		{"outbound ipv4", "15001", l.a, "10.77.0.2", nil, peer},
		{"outbound ipv6", "15001", l.a, "fd77::2", nil, peer},
		{"workload class", "15101", l.a, "10.77.0.2", class, peer},
		{"inbound ipv4", "15006", l.b, "10.77.0.1", nil, app},
		{"inbound ipv6", "15006", l.b, "fd77::1", nil, app},
	} {
		t.Run(tc.what, func(t *testing.T) {
			dst := join(tc.dst, appPort)
			checkRefused(t, tc.from, dst, tc.id, "nothing listening")

			squatter := l.a.listen(t, ":"+tc.port)
			checkRefused(t, tc.from, dst, tc.id, "unmarked listener")
			notAccepted(t, squatter, "unmarked listener")
			_ = squatter.Close()

			agent := l.a.listenMarked(t, ":"+tc.port)
			tc.from.mustDial(t, dst, tc.id, nil)
			if got := origDst(t, accepted(t, agent, "marked listener")); got.String() != dst {
				t.Errorf("marked listener: original destination %s, want %s", got, dst)
			}
			_ = agent.Close()
			notAccepted(t, tc.real, tc.what)
		})
	}

	// The agent holds 127.0.0.1 only; a user binds ::1, which REDIRECT picks for
	// IPv6: the guard refuses that user IPv6 connections too.
	agent := l.a.listenMarked(t, "127.0.0.1:15001")
	squatter := l.a.listen(t, "[::1]:15001")
	checkRefused(t, l.a, join("fd77::2", appPort), nil, "unmarked listener on ::1")
	notAccepted(t, squatter, "unmarked listener on ::1")
	l.a.mustDial(t, join("10.77.0.2", appPort), nil, nil)
	accepted(t, agent, "marked listener on 127.0.0.1")

	// Only redirected connections are guarded: one opened to the port itself
	// reaches whatever listens there, as without our table.
	l.a.mustDial(t, "[::1]:15001", nil, nil)
	accepted(t, squatter, "direct connection")
}

func checkRefused(t *testing.T, from *netNS, dst string, id *identity, what string) {
	t.Helper()
	c, err := from.dial(dst, id, nil)
	if err == nil {
		_ = c.Close()
		t.Fatalf("%s: connection to %s succeeded", what, dst)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("%s: connection to %s: %v, want connection refused", what, dst, err)
	}
}

func (ns *netNS) listenMarked(t *testing.T, addr string) *net.TCPListener {
	t.Helper()
	var ln net.Listener
	err := ns.do(nil, func() (err error) {
		ln, err = ListenMarked("tcp", addr, nft.DefaultMark, true)
		return err
	})
	if err != nil {
		t.Fatalf("listen with the mark on %s in %s: %v", addr, ns.name, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln.(*net.TCPListener)
}
