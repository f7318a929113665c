package hbone

import (
	"context"
	"errors"
)

// DialDouble opens a double-HBONE tunnel (spec/hbone.md "Double HBONE"), the way to a destination on another
// network:
//   - outer: a pooled tunnel to that network's east-west gateway (outer.Gateway, expecting the gateway's
//     identities), whose :authority names the service, "hostname:port";
//   - inner, inside the outer stream: a TLS session and HTTP/2 connection of its own, never pooled, to the
//     destination's node, expecting only inner.Expected (the service's identities: none is refused), and one
//     CONNECT with inner's authority and headers plus x-forwarded-network: network.
//
// The gateway relays the inner session's bytes and sees none of them in plaintext. inner.Gateway is not used. The
// returned Stream is the inner tunnel; closing it ends the inner connection, then the outer tunnel.
func (p *Pool) DialDouble(ctx context.Context, outer, inner Tunnel, network string) (*Stream, error) {
	switch {
	case len(inner.Expected) == 0:
		return nil, newError(FlagTLS, "dial", inner.Authority, errors.New("double HBONE: no identity expected of the destination"))
	case network == "":
		return nil, newError(FlagBadRequest, "dial", inner.Authority, errors.New("double HBONE: the client's network is not set"))
	}
	if _, err := ParseAuthority(inner.Authority); err != nil {
		return nil, newError(FlagBadRequest, "dial", inner.Authority, err)
	}
	os, err := p.Dial(ctx, outer)
	if err != nil {
		return nil, err
	}
	inner.ForwardedNetwork = network
	addr := "inner " + inner.Authority + " via " + outer.Gateway.String()
	// The inner handshake has the connect timeout, as a connection's does; the inner CONNECT's answer then has
	// the response timeout, as a pooled tunnel's (the destination may take its own connect timeout to answer).
	hctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	cfg, err := p.tlsConfig(&inner, addr)
	if err != nil {
		_ = os.Close()
		return nil, err
	}
	stop := context.AfterFunc(hctx, func() { _ = os.Close() }) // the handshake's deadline: a Stream has none of its own
	key := NewPoolKey(inner.Source, inner.Expected, outer.Gateway, inner.ForwardedFor.Addr())
	c, err := p.handshake(hctx, os, os, cfg, key, addr)
	if !stop() && err == nil {
		err = newError(FlagTLS, "handshake", addr, hctx.Err())
		_ = c.nc.Close()
	}
	if err != nil {
		return nil, err
	}
	if !c.tryReserve(1) {
		c.closeWithError(errConnClosed)
		return nil, newError(FlagReset, "dial", addr, errConnClosed)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.closeWithError(ErrPoolClosed)
		return nil, newError(FlagShutdown, "dial", addr, ErrPoolClosed)
	}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		c.serve()
	}()
	st, err := p.roundTrip(ctx, c, &inner)
	if err != nil {
		c.closeWithError(err)
		return nil, err
	}
	release := st.onClose
	st.onClose = func(s *Stream) {
		release(s)
		c.goAway() // its only stream is done: GOAWAY, then the connection and the outer tunnel close
	}
	return st, nil
}
