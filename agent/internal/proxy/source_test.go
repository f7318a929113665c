package proxy

import (
	"context"
	"net"
	"net/netip"
	"testing"
)

// Without a source mark, or for a client address that cannot be the source (loopback, link-local, the other
// family), the agent connects from this host, as before; a loopback listener sees its own address.
func TestDialFromFallsBackToTheHost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for _, tc := range []struct {
		mark uint32
		src  string
	}{{0, "192.0.2.7"}, {0x4539, "127.0.0.2"}, {0x4539, "169.254.1.1"}, {0x4539, "2001:db8::7"}} {
		d := &Deps{Dialer: &net.Dialer{}, SourceMark: tc.mark}
		c, err := d.dialFrom(context.Background(), netip.MustParseAddr(tc.src), dst)
		if err != nil {
			t.Fatalf("mark 0x%x, client %s: %v", tc.mark, tc.src, err)
		}
		if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); got.String() != "127.0.0.1" {
			t.Errorf("mark 0x%x, client %s: connected from %s, want this host's 127.0.0.1", tc.mark, tc.src, got)
		}
		c.Close()
	}
}

// On a host whose return path has no IPv6 (SourceIPv6 false), an IPv6 client reaches the application from this
// host.
func TestDialFromIPv6NeedsItsReturnPath(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal("no IPv6 loopback here:", err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	d := &Deps{Dialer: &net.Dialer{}, SourceMark: 0x2539}
	c, err := d.dialFrom(context.Background(), netip.MustParseAddr("2001:db8::7"), ln.Addr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); got != netip.IPv6Loopback() {
		t.Errorf("connected from %s, want this host's ::1", got)
	}
}
