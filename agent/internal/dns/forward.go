package dns

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// forwarder sends queries that are not the mesh's to the upstream servers.
type forwarder struct {
	upstreams *upstreamSource
	timeout   time.Duration
	dialer    net.Dialer
	metrics   *metrics
	log       *slog.Logger

	mu         sync.Mutex // rate-limits warn
	lastWarn   time.Time
	suppressed int
}

var errNoUpstream = errors.New("no upstream DNS server (none given, none in resolv.conf)")

func newForwarder(o Options, u *upstreamSource, m *metrics, log *slog.Logger) *forwarder {
	timeout := o.UpstreamTimeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return &forwarder{upstreams: u, timeout: timeout, dialer: net.Dialer{Control: o.Control}, metrics: m, log: log}
}

// forward sends raw, a query with one question q, to the upstreams in order and
// returns the first usable reply, unchanged but for its ID, which is the query's.
// Like the host's resolver, it goes on to the next upstream after a SERVFAIL,
// REFUSED or NOTIMP, and returns the last of those if no upstream does better.
func (f *forwarder) forward(ctx context.Context, raw []byte, q mdns.Question, labels query) ([]byte, error) {
	overTCP := labels.overTCP
	ups := f.upstreams.get()
	if len(ups) == 0 {
		f.metrics.upstreamFailure(labels)
		return nil, errNoUpstream
	}
	f.metrics.upstreamRequest(labels)
	start := time.Now()
	defer func() {
		f.metrics.upstreamDuration.WithLabelValues(labels.values()...).Observe(time.Since(start).Seconds())
	}()
	var last []byte
	var errs []error
	for _, up := range ups {
		reply, err := f.ask(ctx, up, raw, q, overTCP)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", up, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		copy(reply, raw[:2])
		switch reply[3] & maskRcode {
		case mdns.RcodeServerFailure, mdns.RcodeRefused, mdns.RcodeNotImplemented:
			last = reply
			continue
		}
		return reply, nil
	}
	if last != nil {
		return last, nil
	}
	f.metrics.upstreamFailure(labels)
	return nil, fmt.Errorf("forward %s %s: %w", typeLabel(q.Qtype), q.Name, errors.Join(errs...))
}

// ask asks one upstream: over TCP if the client asked over TCP; else over UDP,
// and again over TCP if the UDP reply is truncated (if that fails, the truncated
// reply still tells the client to ask over TCP itself).
func (f *forwarder) ask(ctx context.Context, up netip.AddrPort, raw []byte, q mdns.Question, overTCP bool) ([]byte, error) {
	if overTCP {
		return f.exchange(ctx, "tcp", up, raw, q)
	}
	reply, err := f.exchange(ctx, "udp", up, raw, q)
	if err != nil || reply[2]&bitTC == 0 {
		return reply, err
	}
	if full, err := f.exchange(ctx, "tcp", up, raw, q); err == nil {
		return full, nil
	}
	return reply, nil
}

// exchange sends the query with an ID of its own over a new socket and waits at
// most f.timeout for the reply.
func (f *forwarder) exchange(ctx context.Context, network string, up netip.AddrPort, raw []byte, q mdns.Question) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	c, err := f.dialer.DialContext(ctx, network, up.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) }) // the server is closing
	defer stop()

	query := bytes.Clone(raw)
	id := uint16(rand.Uint32())
	binary.BigEndian.PutUint16(query, id)
	if network == "udp" {
		return exchangeUDP(c, query, id, q)
	}
	return exchangeTCP(c, query, id, q)
}

// exchangeUDP skips datagrams that are not the reply (another ID, another
// question): on a connected socket only the upstream reaches us, but a late
// reply or a spoofed one must not be taken for this one.
func exchangeUDP(c net.Conn, query []byte, id uint16, q mdns.Question) ([]byte, error) {
	if _, err := c.Write(query); err != nil {
		return nil, err
	}
	buf := make([]byte, 1<<16)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if checkReply(buf[:n], id, q) == nil {
			return bytes.Clone(buf[:n]), nil
		}
	}
}

func exchangeTCP(c net.Conn, query []byte, id uint16, q mdns.Question) ([]byte, error) {
	msg := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(query)), uint16(len(query)))
	if _, err := c.Write(append(msg, query...)); err != nil {
		return nil, err
	}
	var size [2]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		return nil, err
	}
	reply := make([]byte, binary.BigEndian.Uint16(size[:]))
	if _, err := io.ReadFull(c, reply); err != nil {
		return nil, err
	}
	if err := checkReply(reply, id, q); err != nil {
		return nil, err
	}
	return reply, nil
}

// checkReply checks that b is a response to the query with this id and question.
// The rest of the message is the upstream's business and goes to the client as
// is. A reply without a question (some servers' errors) is accepted.
func checkReply(b []byte, id uint16, q mdns.Question) error {
	if len(b) < headerLen || binary.BigEndian.Uint16(b) != id || b[2]&bitQR == 0 {
		return errors.New("not a reply to the query")
	}
	if binary.BigEndian.Uint16(b[4:]) == 0 {
		return nil
	}
	name, off, err := mdns.UnpackDomainName(b, headerLen)
	if err != nil || off+4 > len(b) {
		return errors.New("malformed reply")
	}
	if !strings.EqualFold(name, q.Name) || binary.BigEndian.Uint16(b[off:]) != q.Qtype || binary.BigEndian.Uint16(b[off+2:]) != q.Qclass {
		return errors.New("reply to another question")
	}
	return nil
}

// warn logs a forwarding failure, at most one per 10 seconds: an upstream that is
// down would otherwise log every query.
func (f *forwarder) warn(err error) {
	f.mu.Lock()
	now := time.Now()
	if now.Sub(f.lastWarn) < 10*time.Second {
		f.suppressed++
		f.mu.Unlock()
		return
	}
	f.lastWarn = now
	n := f.suppressed
	f.suppressed = 0
	f.mu.Unlock()
	f.log.Warn("dns: answering SERVFAIL", "err", err, "suppressed", n)
}
