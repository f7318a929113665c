package dns

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"time"
)

// serveUDP answers each datagram in a goroutine of its own, up to maxInflight at
// once; beyond that, queries are dropped and their clients ask again.
func (s *Server) serveUDP(pc *net.UDPConn) {
	buf := make([]byte, 1<<16)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			s.log.Debug("dns: read", "err", err)
			continue
		}
		select {
		case s.inflight <- struct{}{}:
		default:
			s.metrics.dropped.Inc()
			continue
		}
		req := bytes.Clone(buf[:n])
		s.wg.Go(func() {
			defer func() { <-s.inflight }()
			if resp := s.handle(s.ctx, req, false, from.Addr()); resp != nil {
				_, _ = pc.WriteToUDPAddrPort(resp, from)
			}
		})
	}
}

// serveTCP accepts connections, up to maxTCPConns open at once.
func (s *Server) serveTCP(ln *net.TCPListener) {
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // out of file descriptors, say: let it pass
			s.log.Debug("dns: accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !s.track(c) {
			_ = c.Close()
			continue
		}
		s.wg.Go(func() {
			defer s.untrack(c)
			s.serveConn(c)
		})
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.conns) >= maxTCPConns {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	_ = c.Close()
}

// serveConn answers the queries of one TCP connection in turn (RFC 7766 framing:
// a two-byte length before each message) until the client closes it or stays
// idle for tcpIdle.
func (s *Server) serveConn(c net.Conn) {
	var remote netip.Addr
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		remote = ta.AddrPort().Addr().Unmap()
	}
	var size [2]byte
	for {
		_ = c.SetDeadline(time.Now().Add(tcpIdle))
		if _, err := io.ReadFull(c, size[:]); err != nil {
			return
		}
		req := make([]byte, binary.BigEndian.Uint16(size[:]))
		if _, err := io.ReadFull(c, req); err != nil {
			return
		}
		resp := s.handle(s.ctx, req, true, remote)
		if resp == nil || len(resp) > 0xffff {
			return
		}
		out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(resp)), uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}
