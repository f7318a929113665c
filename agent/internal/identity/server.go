package identity

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// LocalIdentity maps the local address a connection arrived on, and the SNI the client sent ("" when none), to
// the identity of the local workload it is for. With transparent capture the local address is the workload's own
// address; SNI tells apart workloads that share one.
type LocalIdentity func(addr netip.Addr, serverName string) (spiffeid.ID, bool)

// ServerTLSConfig is the HBONE server's TLS configuration. For each connection it presents the current
// certificate of the workload local picks from the connection's local address and SNI, requires a client
// certificate that chains to the bundle and carries a SPIFFE ID of that workload's trust domain, and speaks only
// TLS 1.3 with AES-GCM and ALPN h2. Who may talk to whom is for authorization to decide, after the handshake
// (see PeerID). A connection to an address no local workload owns fails the handshake.
func ServerTLSConfig(src Source, local LocalIdentity) *tls.Config {
	cfg := baseTLSConfig()
	cfg.ClientAuth = tls.RequireAnyClientCert
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		addr, err := localAddr(hello.Conn)
		if err != nil {
			return nil, err
		}
		id, ok := local(addr, hello.ServerName)
		if !ok {
			return nil, fmt.Errorf("identity: no local workload owns %s", addr)
		}
		return ServerConfig(src, id)
	}
	return cfg
}

// ServerConfig is the configuration of one HBONE server handshake presenting id, with its certificate as it is
// right now: TLS 1.3, a client certificate required that chains to the bundle and is of id's trust domain.
func ServerConfig(src Source, id spiffeid.ID) (*tls.Config, error) {
	snap := src.Snapshot()
	cert, ok := snap.Certificate(id)
	if !ok {
		return nil, fmt.Errorf("identity: no certificate for %s", id)
	}
	cfg := baseTLSConfig()
	cfg.Certificates = []tls.Certificate{*cert}
	cfg.ClientAuth = tls.RequireAnyClientCert
	cfg.VerifyPeerCertificate = tlsconfig.VerifyPeerCertificate(snap, tlsconfig.AuthorizeMemberOf(id.TrustDomain()))
	return cfg, nil
}

func localAddr(c net.Conn) (netip.Addr, error) {
	if c == nil {
		return netip.Addr{}, fmt.Errorf("identity: handshake without a connection")
	}
	if tcp, ok := c.LocalAddr().(*net.TCPAddr); ok {
		return tcp.AddrPort().Addr().Unmap(), nil
	}
	ap, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("identity: local address %q of %s connection: %w", c.LocalAddr(), c.LocalAddr().Network(), err)
	}
	return ap.Addr().Unmap(), nil
}
