package policy

import (
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// peer is the source of a connection as the matchers compare it. A plaintext source has no identity:
// every positive principal, namespace and service-account match fails (even "*"), every negated one holds.
type peer struct {
	principal      string // the identity without "spiffe://", e.g. "cluster.local/ns/default/sa/sleep"
	namespace      string // from an Istio-shaped identity (/ns/<ns>/sa/<sa>); "" otherwise
	serviceAccount string
	ip             netip.Addr
}

func peerOf(id spiffeid.ID, ip netip.Addr) peer {
	p := peer{ip: ip.Unmap()}
	if id.IsZero() {
		return p
	}
	p.principal = strings.TrimPrefix(id.String(), "spiffe://")
	if rest, ok := strings.CutPrefix(id.Path(), "/ns/"); ok {
		if ns, sa, ok := strings.Cut(rest, "/sa/"); ok && ns != "" && sa != "" && !strings.Contains(sa, "/") {
			p.namespace, p.serviceAccount = ns, sa
		}
	}
	return p
}

// target is the destination as the matchers compare it.
type target struct {
	ip   netip.Addr
	port uint16
	req  *Request // the request, at the waypoint's L7; nil for a connection
}

// matches reports whether the policy matches and, if so, the Index of the first rule that did.
// No rules: never. A rule with no clauses: always.
func (a *Authorization) matches(src *peer, dst target) (int, bool) {
	rules := a.Rules
	if dst.req != nil && a.L7Rules != nil {
		rules = a.L7Rules
	}
	for i := range rules {
		if rules[i].matches(src, dst) {
			return rules[i].Index, true
		}
	}
	return -1, false
}

// matches: every clause must match; a clause matches if any of its matches does, or if it has none.
func (r *Rule) matches(src *peer, dst target) bool {
	for i := range r.Clauses {
		c := &r.Clauses[i]
		if len(c.Matches) == 0 {
			continue
		}
		ok := false
		for j := range c.Matches {
			if c.Matches[j].matches(src, dst) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// matches: a match with no field never matches; otherwise every set field must hold (values OR'd) and no
// value of a negated field may hold. Only the fields that are set are looked at, cheap comparisons first.
func (m *Match) matches(src *peer, dst target) bool {
	fields := m.mask()
	if fields == 0 {
		return false
	}
	if fields&(hasDestinationPorts|hasNotDestinationPorts) != 0 {
		if fields&hasDestinationPorts != 0 && !anyPort(m.DestinationPorts, dst.port) || anyPort(m.NotDestinationPorts, dst.port) {
			return false
		}
	}
	if fields&(hasDestinationIPs|hasNotDestinationIPs) != 0 {
		if fields&hasDestinationIPs != 0 && !anyPrefix(m.DestinationIPs, dst.ip) || anyPrefix(m.NotDestinationIPs, dst.ip) {
			return false
		}
	}
	if fields&(hasSourceIPs|hasNotSourceIPs) != 0 {
		if fields&hasSourceIPs != 0 && !anyPrefix(m.SourceIPs, src.ip) || anyPrefix(m.NotSourceIPs, src.ip) {
			return false
		}
	}
	if fields&(hasNamespaces|hasNotNamespaces) != 0 {
		if fields&hasNamespaces != 0 && !anyString(m.Namespaces, src.namespace) || anyString(m.NotNamespaces, src.namespace) {
			return false
		}
	}
	if fields&(hasServiceAccounts|hasNotServiceAccounts) != 0 {
		if fields&hasServiceAccounts != 0 && !anyServiceAccount(m.ServiceAccounts, src) || anyServiceAccount(m.NotServiceAccounts, src) {
			return false
		}
	}
	if fields&(hasPrincipals|hasNotPrincipals) != 0 {
		if fields&hasPrincipals != 0 && !anyString(m.Principals, src.principal) || anyString(m.NotPrincipals, src.principal) {
			return false
		}
	}
	if fields&hasL7 != 0 {
		return dst.req != nil && m.matchesRequest(dst.req, src.ip)
	}
	return true
}

// matchesRequest checks m's L7 attributes against r from the caller at remote, as Envoy's RBAC filter does for
// Istio: methods exactly; paths with Istio's exact, prefix ("x*"), suffix ("*x") and presence ("*") forms; hosts
// without case, a pattern without a port matching the host with any port; a header's values joined with ","
// as Envoy sees them, Host among them.
func (m *Match) matchesRequest(r *Request, remote netip.Addr) bool {
	if len(m.Methods) > 0 && !slices.Contains(m.Methods, r.Method) || slices.Contains(m.NotMethods, r.Method) {
		return false
	}
	if len(m.Paths) > 0 && !anyString(m.Paths, r.Path) || anyString(m.NotPaths, r.Path) {
		return false
	}
	if len(m.Hosts) > 0 && !anyHost(m.Hosts, r.Host) || anyHost(m.NotHosts, r.Host) {
		return false
	}
	if len(m.RemoteIPs) > 0 && !anyPrefix(m.RemoteIPs, remote) || anyPrefix(m.NotRemoteIPs, remote) {
		return false
	}
	for _, h := range m.Headers {
		vals, present := r.Header[h.Name]
		if h.Name == "Host" {
			vals, present = []string{r.Host}, r.Host != ""
		}
		v := strings.Join(vals, ",")
		if len(h.Values) > 0 && !(present && anyHeaderValue(h.Values, v)) || present && anyHeaderValue(h.NotValues, v) {
			return false
		}
	}
	return true
}

// anyHeaderValue is anyString where presence ("*") holds for any value of a present header, even empty.
func anyHeaderValue(ms []StringMatch, v string) bool {
	for _, m := range ms {
		if m.Type == MatchPresence || m.matches(v) {
			return true
		}
	}
	return false
}

// anyHost matches an authority (host, or host:port) without case: a pattern with a port against the whole
// authority, one without against the host alone.
func anyHost(ms []StringMatch, authority string) bool {
	authority = strings.ToLower(authority)
	host := authority
	if h, _, err := net.SplitHostPort(authority); err == nil {
		host = h
		if strings.Contains(h, ":") { // an IPv6 literal: as written, in brackets
			host = "[" + h + "]"
		}
	}
	for _, m := range ms {
		m.Value = strings.ToLower(m.Value)
		v := host
		if _, _, err := net.SplitHostPort(m.Value); err == nil {
			v = authority
		}
		if m.matches(v) {
			return true
		}
	}
	return false
}

// matches compares s with v. An empty v (no identity) matches nothing, not even presence.
func (s StringMatch) matches(v string) bool {
	if v == "" {
		return false
	}
	switch s.Type {
	case MatchExact:
		return v == s.Value
	case MatchPrefix:
		return strings.HasPrefix(v, s.Value)
	case MatchSuffix:
		return strings.HasSuffix(v, s.Value)
	case MatchPresence:
		return true
	}
	return false
}

func anyString(ms []StringMatch, v string) bool {
	for _, m := range ms {
		if m.matches(v) {
			return true
		}
	}
	return false
}

func anyServiceAccount(ms []ServiceAccountMatch, src *peer) bool {
	return src.serviceAccount != "" && slices.ContainsFunc(ms, func(m ServiceAccountMatch) bool {
		return m.Namespace == src.namespace && m.ServiceAccount == src.serviceAccount
	})
}

// anyPrefix: an invalid address (unknown) is in no prefix.
func anyPrefix(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func anyPort(ps []uint16, port uint16) bool {
	for _, p := range ps {
		if p == port {
			return true
		}
	}
	return false
}
