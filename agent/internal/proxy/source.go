package proxy

import (
	"context"
	"net"
	"net/netip"

	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
)

// dialFrom connects to a local application at dst within the connect timeout: from the client's address src
// when the agent shows applications their real client (Deps.SourceMark), else, or when src cannot be used
// (invalid, loopback, link-local: it would need a zone, of the other family than dst, or IPv6 on a host whose
// return path has no IPv6), from this host with the agent's marked dialer.
func (d *Deps) dialFrom(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	src = src.Unmap()
	if d.SourceMark == 0 || !src.IsValid() || src.IsLoopback() || src.IsLinkLocalUnicast() || src.Is4() != dst.Addr().Unmap().Is4() ||
		(src.Is6() && !d.SourceIPv6) {
		return d.Dialer.DialContext(ctx, "tcp", dst.String())
	}
	network := "tcp4"
	if src.Is6() {
		network = "tcp6"
	}
	transparent := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Control: capture.TransparentControl(d.SourceMark)}
	return transparent.DialContext(ctx, network, dst.String())
}
