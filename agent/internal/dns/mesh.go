package dns

import (
	"net/netip"
	"strings"

	mdns "github.com/miekg/dns"
)

// meshAnswer answers a query for a mesh name authoritatively, or returns nil
// when the name is not the mesh's. A: the IPv4 VIPs, AAAA: the IPv6 ones; any
// other type, or a family without VIPs, gets NOERROR with no answer (NODATA): the
// name exists. Records carry the name as asked, in the case it was asked.
func (s *Server) meshAnswer(req *mdns.Msg) *mdns.Msg {
	q := req.Question[0]
	if req.Opcode != mdns.OpcodeQuery || q.Qclass != mdns.ClassINET {
		return nil
	}
	v4, v6, ok := s.lookupMesh(q.Name)
	if !ok {
		return nil
	}
	m := new(mdns.Msg).SetReply(req)
	m.Authoritative = true
	hdr := mdns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: mdns.ClassINET, Ttl: ttl}
	switch q.Qtype {
	case mdns.TypeA:
		for _, a := range v4 {
			if a = a.Unmap(); a.Is4() {
				m.Answer = append(m.Answer, &mdns.A{Hdr: hdr, A: a.AsSlice()})
			}
		}
	case mdns.TypeAAAA:
		for _, a := range v6 {
			if a.Is6() && !a.Is4In6() {
				m.Answer = append(m.Answer, &mdns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
	}
	return m
}

// lookupMesh tries the names a query may mean (see candidates) and returns the
// VIPs of the first that is a mesh name.
func (s *Server) lookupMesh(qname string) (v4, v6 []netip.Addr, ok bool) {
	name := strings.ToLower(strings.TrimSuffix(qname, "."))
	if name == "" {
		return nil, nil, false
	}
	for _, n := range candidates(name, s.search) {
		if v4, v6, ok = s.lookup(n); ok {
			return v4, v6, true
		}
	}
	return nil, nil, false
}

// candidates lists the names a query for name may mean, in the order they are
// tried: a name with a dot may be complete, so it comes first as asked, then under
// each search domain ("reviews.default" -> "reviews.default.svc.cluster.local");
// a single label is tried as asked last.
func candidates(name string, search []string) []string {
	out := make([]string, 0, len(search)+1)
	dotted := strings.Contains(name, ".")
	if dotted {
		out = append(out, name)
	}
	for _, d := range search {
		out = append(out, name+"."+d)
	}
	if !dotted {
		out = append(out, name)
	}
	return out
}
