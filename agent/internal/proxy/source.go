package proxy

import (
	"context"
	"net"
	"net/netip"
	"syscall"

	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
)

// localDialers are how the agent connects to local applications, built once: the marked dialer without TCP
// keepalive, and the transparent sockets' control function. Both ends of such a connection are on this host, so
// keepalive probes protect nothing (the kernel ends the connection when either process dies); Go's default would
// cost four setsockopt calls per connection.
type localDialers struct {
	plain       *net.Dialer
	transparent func(network, address string, c syscall.RawConn) error
}

func (d *Deps) local() *localDialers {
	d.localOnce.Do(func() {
		var plain net.Dialer
		if d.Dialer != nil {
			plain = *d.Dialer
		}
		plain.KeepAlive = -1
		d.localDial = &localDialers{plain: &plain}
		if d.SourceMark != 0 {
			d.localDial.transparent = capture.TransparentControl(d.SourceMark)
		}
	})
	return d.localDial
}

// dialFrom connects to a local application at dst within the connect timeout: from the client's address src
// when the agent shows applications their real client (Deps.SourceMark), else, or when src cannot be used
// (invalid, loopback, link-local: it would need a zone, of the other family than dst, or IPv6 on a host whose
// return path has no IPv6), from this host with the agent's marked dialer.
func (d *Deps) dialFrom(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	src = src.Unmap()
	local := d.local()
	if d.SourceMark == 0 || !src.IsValid() || src.IsLoopback() || src.IsLinkLocalUnicast() || src.Is4() != dst.Addr().Unmap().Is4() ||
		(src.Is6() && !d.SourceIPv6) {
		return local.plain.DialContext(ctx, "tcp", dst.String())
	}
	network := "tcp4"
	if src.Is6() {
		network = "tcp6"
	}
	transparent := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Control: local.transparent,
		KeepAlive: -1}
	return transparent.DialContext(ctx, network, dst.String())
}
