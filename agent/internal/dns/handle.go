package dns

import (
	"context"
	"errors"
	"net/netip"

	mdns "github.com/miekg/dns"
)

// Header bits, in the third and fourth bytes of a message.
const (
	headerLen = 12
	bitQR     = 0x80 // byte 2: a response
	bitTC     = 0x02 // byte 2: truncated
	bitRD     = 0x01 // byte 2: recursion desired
	maskOp    = 0x78 // byte 2: opcode
	bitRA     = 0x80 // byte 3: recursion available
	maskRcode = 0x0f // byte 3
)

// ourUDPSize is the EDNS payload size the proxy announces (RFC 9715's advice).
const ourUDPSize = 1232

// handle answers one message as received, over TCP or UDP. It returns nil when
// there is nothing to answer: a message too short to carry an ID, or a response
// (answering those could start a loop between two servers).
func (s *Server) handle(ctx context.Context, raw []byte, overTCP bool, from netip.Addr) []byte {
	if len(raw) < headerLen || raw[2]&bitQR != 0 {
		return nil
	}
	req := new(mdns.Msg)
	if err := req.Unpack(raw); err != nil || len(req.Question) != 1 {
		return formErr(raw)
	}
	q := query{qtype: req.Question[0].Qtype, overTCP: overTCP}
	if s.source != nil {
		q.service, q.revision = s.source(from.Unmap())
	}
	s.metrics.request(q)
	var resp []byte
	if m := s.meshAnswer(req); m != nil {
		resp = pack(m, req)
	} else {
		resp = s.forward(ctx, raw, req, q)
	}
	if !overTCP {
		resp = fitUDP(resp, req)
	}
	return resp
}

// formErr is the answer to a message that cannot be parsed: its header with the
// ID, opcode and RD bit of the query and rcode FORMERR, no section.
func formErr(raw []byte) []byte {
	resp := make([]byte, headerLen)
	copy(resp, raw[:2])
	resp[2] = bitQR | raw[2]&(maskOp|bitRD)
	resp[3] = bitRA | mdns.RcodeFormatError
	return resp
}

// forward sends the query upstream and returns the reply, or SERVFAIL.
func (s *Server) forward(ctx context.Context, raw []byte, req *mdns.Msg, q query) []byte {
	reply, err := s.fwd.forward(ctx, raw, req.Question[0], q)
	if err != nil {
		if !errors.Is(err, errNoUpstream) { // logged once, when the upstreams went away
			s.fwd.warn(err)
		}
		return pack(new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure), req)
	}
	return reply
}

// pack packs an answer of the proxy's own: recursion available, and an OPT
// record when the query had one (RFC 6891).
func pack(m, req *mdns.Msg) []byte {
	m.RecursionAvailable = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(ourUDPSize, opt.Do())
	}
	b, err := m.Pack()
	if err != nil { // cannot happen with the records made here; answer at least the header
		return serverFailure(req)
	}
	return b
}

func serverFailure(req *mdns.Msg) []byte {
	b, _ := new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure).Pack()
	return b
}

// fitUDP makes resp fit the client's UDP payload size (512, or its EDNS size),
// dropping records and setting TC if it does not, so the client asks again over
// TCP. An upstream reply fetched over TCP after a truncated one may need it.
func fitUDP(resp []byte, req *mdns.Msg) []byte {
	size := mdns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(size, int(opt.UDPSize()))
	}
	if len(resp) <= size {
		return resp
	}
	m := new(mdns.Msg)
	if err := m.Unpack(resp); err != nil {
		short := new(mdns.Msg).SetReply(req)
		short.Truncated = true
		b, _ := short.Pack()
		return b
	}
	m.Truncate(size)
	b, err := m.Pack()
	if err != nil {
		return serverFailure(req)
	}
	return b
}
