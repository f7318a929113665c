// Command hbonepeer carries benchmark traffic through Istio's own Go HBONE code
// (istio.io/istio/pkg/hbone), so that the agent's HBONE can be compared with
// another implementation on the same lab topology (docs/benchmarks.md, row
// "peer").
//
//	hbonepeer client -listen 127.0.0.1:15101 -gateway 10.77.0.16:15008 -identity DIR
//	hbonepeer server -listen :15008 -identity DIR
//
// The client accepts connections that an nftables redirect sends it (as the
// agent's capture does), reads their original destination and opens an HBONE
// tunnel to it with Istio's dialer; the server is Istio's HBONE server with
// mutual TLS. Both use the certificates of the agent's built-in CA (the files
// layout of `ambient-agent ca issue`). This module is separate from the agent's
// so that Istio never enters the agent's go.mod.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"istio.io/istio/pkg/hbone"
	istiolog "istio.io/istio/pkg/log"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hbonepeer client|server [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	listen := fs.String("listen", "", "address to listen on")
	gateway := fs.String("gateway", "", "client: the HBONE server's ip:port")
	dir := fs.String("identity", "", "identity dir (root-cert.pem, NS/SA/cert-chain.pem, NS/SA/key.pem)")
	ns := fs.String("namespace", "default", "namespace of the identity")
	sa := fs.String("service-account", "default", "service account of the identity")
	_ = fs.Parse(os.Args[2:])

	// Istio logs several lines per tunnel at info; the agent logs one access line. Keep the peer quiet.
	for _, s := range istiolog.Scopes() {
		s.SetOutputLevel(istiolog.WarnLevel)
	}
	cert, roots, err := loadIdentity(*dir, *ns, *sa)
	if err != nil {
		fatal(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fatal(err)
	}
	switch os.Args[1] {
	case "client":
		err = runClient(ln, *gateway, clientTLS(cert, roots))
	case "server":
		err = runServer(ln, serverTLS(cert, roots))
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	fatal(err)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "hbonepeer:", err)
	os.Exit(1)
}

func loadIdentity(dir, ns, sa string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, ns, sa, "cert-chain.pem"), filepath.Join(dir, ns, sa, "key.pem"))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pem, err := os.ReadFile(filepath.Join(dir, "root-cert.pem"))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return tls.Certificate{}, nil, errors.New("no root certificate in root-cert.pem")
	}
	return cert, roots, nil
}

// SPIFFE certificates carry no DNS names: verify the chain against the mesh
// root, not a host name (as the agent and ztunnel do).
func verifyChain(roots *x509.CertPool, usage x509.ExtKeyUsage) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("no peer certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return err
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
		return err
	}
}

func clientTLS(cert tls.Certificate, roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{cert},
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verifyChain(roots, x509.ExtKeyUsageServerAuth),
		NextProtos:            []string{"h2"},
	}
}

func serverTLS(cert tls.Certificate, roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{cert},
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: verifyChain(roots, x509.ExtKeyUsageClientAuth),
		NextProtos:            []string{"h2"},
	}
}

// runServer is Istio's HBONE server (hbone.NewServer: CONNECT handler, dial,
// copy) behind mutual TLS with ALPN h2.
func runServer(ln net.Listener, cfg *tls.Config) error {
	srv := hbone.NewServer()
	srv.Protocols.SetHTTP2(true)
	srv.TLSConfig = cfg
	return srv.ServeTLS(ln, "", "")
}

// runClient tunnels every accepted connection to its original destination
// with Istio's HBONE dialer (one shared HTTP/2 transport, as Istio uses it).
func runClient(ln net.Listener, gateway string, cfg *tls.Config) error {
	timeout := 10 * time.Second
	d := hbone.NewDialer(hbone.Config{ProxyAddress: gateway, TLS: cfg, Timeout: &timeout})
	var first sync.Once
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			dst, err := originalDst(c.(*net.TCPConn))
			if err != nil {
				fmt.Fprintln(os.Stderr, "hbonepeer: original destination:", err)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			up, err := d.DialContext(ctx, "tcp", dst.String())
			cancel()
			if err != nil {
				fmt.Fprintln(os.Stderr, "hbonepeer: dial", dst, err)
				return
			}
			defer up.Close()
			first.Do(func() { fmt.Fprintln(os.Stderr, "hbonepeer: first tunnel to", dst, "through", gateway) })
			relay(c.(*net.TCPConn), up)
		}()
	}
}

// relay copies both ways; Istio's dialer returns a net.Pipe, which cannot
// half-close, so the end of either direction ends both.
func relay(down *net.TCPConn, up net.Conn) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, down); done <- struct{}{} }()
	go func() { _, _ = io.Copy(down, up); done <- struct{}{} }()
	<-done
	_ = up.Close()
	_ = down.Close()
	<-done
}

// originalDst reads the destination an nftables redirect replaced.
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var (
		mreq *unix.IPv6Mreq
		serr error
	)
	err = rc.Control(func(fd uintptr) {
		mreq, serr = unix.GetsockoptIPv6Mreq(int(fd), syscall.SOL_IP, unix.SO_ORIGINAL_DST)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, err
	}
	// A struct sockaddr_in: family, port (big endian), IPv4 address.
	b := mreq.Multiaddr
	port := binary.BigEndian.Uint16(b[2:4])
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]}), port), nil
}
