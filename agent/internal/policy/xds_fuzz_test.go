package policy

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// FuzzXDS builds istiod policies and connections from arbitrary bytes: WithXDS, Evaluate, Applicable and
// Summary never panic, and every decision is the one a direct transcription of ztunnel's rbac.rs and
// assert_rbac makes (refDecide). Run it with: go test -fuzz FuzzXDS ./agent/internal/policy
func FuzzXDS(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x03\x01\x01\x01\x00\x02\x02\x02\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01"))
	f.Add([]byte("istiod sends ztunnels compiled policies; ztunnel enforces them"))
	local, _ := compileYAML(f, allowFrom("allow", "default", "namespaces: [other]")+"---\n"+pa("mesh", "istio-system", "", "STRICT", ""))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkAgainstReference(t, local, &byteGen{b: data}, nil)
	})
}

// The same check over random inputs, so it runs with every `go test`.
func TestXDSMatchesReference(t *testing.T) {
	local, _ := compileYAML(t, allowFrom("allow", "default", "namespaces: [other]"))
	r := rand.New(rand.NewPCG(12, 2026))
	seen := map[string]int{}
	for range 3000 {
		data := make([]byte, 64+r.IntN(512))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		checkAgainstReference(t, local, &byteGen{b: data}, seen)
		if t.Failed() {
			t.Logf("input: %q", data)
			return
		}
	}
	for _, r := range []Reason{ReasonDenyMatched, ReasonNoAllowPolicy, ReasonAllowMatched, ReasonNoAllowMatched} {
		if seen[string(r)] < 100 || seen["dry-run "+string(r)] < 10 {
			t.Errorf("the random policies rarely end with %q: %v", r, seen)
		}
	}
}

// checkAgainstReference counts the outcomes in seen, when given.
func checkAgainstReference(t *testing.T, local *Set, g *byteGen, seen map[string]int) {
	t.Helper()
	auths := genAuths(g)
	conns := make([]Conn, 1+g.pick(12))
	for i := range conns {
		conns[i] = genConn(g)
	}
	set, ws := (*Set)(nil).WithXDS(auths)
	for _, w := range ws {
		_ = w.String()
	}
	_, _, _ = set.Summary(), set.Authorizations(), set.Len()
	both, _ := local.WithXDS(auths)
	_ = both.Summary()
	for _, c := range conns {
		got := set.Evaluate(c)
		want := refDecide(auths, c)
		if got.Allow != want.allow || got.Reason != want.reason || (got.DryRun == nil) != (want.dry == nil) ||
			got.DryRun != nil && (got.DryRun.Allow != want.dry.allow || got.DryRun.Reason != want.dry.reason) {
			t.Fatalf("%s (bound %q):\n  got       %s\n  reference %+v (dry-run %+v)\n  policies %+v", connString(c), c.BoundPolicies, got, want, want.dry, auths)
		}
		if seen != nil {
			seen[string(got.Reason)]++
			if got.DryRun != nil {
				seen["dry-run "+string(got.DryRun.Reason)]++
			}
		}
		applicable := set.Applicable(c)
		for i := range applicable {
			for j := range i {
				if applicable[i].Key() == applicable[j].Key() {
					t.Fatalf("%s is applicable twice: %+v", applicable[i].Key(), c)
				}
			}
		}
		_ = both.Evaluate(c).String()
		_ = both.Applicable(c)
	}
}

// byteGen draws choices from the fuzzer's bytes; past the end every choice is 0.
type byteGen struct {
	b []byte
	i int
}

func (g *byteGen) pick(n int) int {
	if g.i >= len(g.b) {
		return 0
	}
	v := g.b[g.i]
	g.i++
	return int(v) % n
}

func pickOf[T any](g *byteGen, pool []T) T { return pool[g.pick(len(pool))] }

func listOf[T any](g *byteGen, pool []T) []T {
	n := g.pick(3)
	if n == 0 {
		return nil
	}
	out := make([]T, n)
	for i := range out {
		out[i] = pickOf(g, pool)
	}
	return out
}

var (
	genStrings = []XDSStringMatch{xExact("default"), xPrefix("cluster.local/ns/"), xSuffix("/sa/sleep"), xPresence, {},
		{Exact: "other", Suffix: "x"}, xExact("cluster.local/ns/default/sa/sleep"), xPrefix("oth"), xSuffix("t")}
	genAccounts = []XDSServiceAccountMatch{{"default", "sleep"}, {"other", "client"}, {}}
	genPrefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.0.0.1/32"),
		netip.MustParsePrefix("2001:db8::/32"), {}, netip.MustParsePrefix("::ffff:10.0.0.1/128"), netip.MustParsePrefix("0.0.0.0/0"),
		netip.PrefixFrom(netip.MustParseAddr("10.0.0.1"), 40)}
	genPorts = []uint16{8080, 9090, 0, 22}
	genKeys  = []string{"default/a", "other/b", "istio-system/istio_converted_static_strict", "x/y", ""}
)

func genAuths(g *byteGen) []XDSAuthorization {
	auths := make([]XDSAuthorization, g.pick(5))
	for i := range auths {
		a := &auths[i]
		a.Name = pickOf(g, []string{"a", "b", "istio_converted_static_strict"})
		a.Namespace = pickOf(g, []string{"default", "other", "istio-system"})
		a.Scope = pickOf(g, []XDSScope{XDSScopeGlobal, XDSScopeNamespace, XDSScopeWorkloadSelector, 9})
		a.Action = pickOf(g, []XDSAction{XDSActionAllow, XDSActionDeny, XDSActionAudit, 5})
		a.DryRun = g.pick(3) == 0
		a.Groups = make([]XDSGroup, g.pick(4))
		for j := range a.Groups {
			a.Groups[j].Rules = make([]XDSRules, g.pick(3))
			for k := range a.Groups[j].Rules {
				ms := make([]XDSMatch, g.pick(3))
				for l := range ms {
					ms[l] = XDSMatch{
						Namespaces: listOf(g, genStrings), NotNamespaces: listOf(g, genStrings),
						ServiceAccounts: listOf(g, genAccounts), NotServiceAccounts: listOf(g, genAccounts),
						Principals: listOf(g, genStrings), NotPrincipals: listOf(g, genStrings),
						SourceIPs: listOf(g, genPrefixes), NotSourceIPs: listOf(g, genPrefixes),
						DestinationIPs: listOf(g, genPrefixes), NotDestinationIPs: listOf(g, genPrefixes),
						DestinationPorts: listOf(g, genPorts), NotDestinationPorts: listOf(g, genPorts),
					}
				}
				a.Groups[j].Rules[k].Matches = ms
			}
		}
	}
	return auths
}

func genConn(g *byteGen) Conn {
	return Conn{
		DestNamespace: pickOf(g, []string{"default", "other", "istio-system", ""}),
		DestIP:        addr(pickOf(g, []string{"10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1", ""})),
		DestPort:      pickOf(g, genPorts),
		SourceIdentity: id(pickOf(g, []string{"", sleep, "spiffe://cluster.local/ns/other/sa/client",
			"spiffe://example.org/workload/x", "spiffe://td/ns/oth/sa/t"})),
		SourceIP:      addr(pickOf(g, []string{"10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1", ""})),
		BoundPolicies: listOf(g, genKeys),
	}
}

// refDecide is ztunnel's ProxyState::assert_rbac over its Authorization::matches, written from the Rust
// source without the package's compiled form or index: the reference the fuzzer compares with.
type refOutcome struct {
	allow  bool
	reason Reason
	dry    *refOutcome
}

func refDecide(auths []XDSAuthorization, c Conn) refOutcome {
	byKey := map[string]XDSAuthorization{}
	for _, a := range auths {
		byKey[a.Namespace+"/"+a.Name] = a // a later update replaces an earlier one
	}
	var applicable []XDSAuthorization
	for k, a := range byKey {
		known := a.Scope >= 0 && a.Scope <= 2 && (a.Action == XDSActionAllow || a.Action == XDSActionDeny)
		applies := a.Scope == XDSScopeGlobal || a.Scope == XDSScopeNamespace && a.Namespace == c.DestNamespace ||
			slices.Contains(c.BoundPolicies, k)
		if known && applies {
			applicable = append(applicable, a)
		}
	}
	out := refSteps(applicable, c, false)
	for _, a := range applicable {
		if a.DryRun {
			dry := refSteps(applicable, c, true)
			out.dry = &dry
			break
		}
	}
	return out
}

func refSteps(applicable []XDSAuthorization, c Conn, withDryRun bool) refOutcome {
	for _, a := range applicable {
		if a.Action == XDSActionDeny && (!a.DryRun || withDryRun) && refMatches(a, c) {
			return refOutcome{reason: ReasonDenyMatched}
		}
	}
	allowApplies := false
	for _, a := range applicable {
		if a.Action == XDSActionAllow && (!a.DryRun || withDryRun) {
			allowApplies = true
			if refMatches(a, c) {
				return refOutcome{allow: true, reason: ReasonAllowMatched}
			}
		}
	}
	if !allowApplies {
		return refOutcome{allow: true, reason: ReasonNoAllowPolicy}
	}
	return refOutcome{reason: ReasonNoAllowMatched}
}

func refMatches(a XDSAuthorization, c Conn) bool {
	if len(a.Groups) == 0 {
		return false
	}
	for _, g := range a.Groups {
		ruleMatch := true
		for _, clause := range g.Rules {
			clauseMatch := len(clause.Matches) == 0
			for _, m := range clause.Matches {
				if refMatch(m, c) {
					clauseMatch = true
					break
				}
			}
			if !clauseMatch {
				ruleMatch = false
				break
			}
		}
		if ruleMatch {
			return true
		}
	}
	return false
}

func refMatch(m XDSMatch, c Conn) bool {
	// Conversion, as TryFrom<&Match>: unset string matches and invalid addresses are left out.
	strs := func(in []XDSStringMatch) []XDSStringMatch {
		var out []XDSStringMatch
		for _, s := range in {
			switch {
			case s.Exact != "":
				out = append(out, XDSStringMatch{Exact: s.Exact})
			case s.Prefix != "":
				out = append(out, XDSStringMatch{Prefix: s.Prefix})
			case s.Suffix != "":
				out = append(out, XDSStringMatch{Suffix: s.Suffix})
			case s.Presence:
				out = append(out, XDSStringMatch{Presence: true})
			}
		}
		return out
	}
	nets := func(in []netip.Prefix) []netip.Prefix {
		var out []netip.Prefix
		for _, p := range in {
			if p.IsValid() {
				out = append(out, p)
			}
		}
		return out
	}
	ns, nns, ps, nps := strs(m.Namespaces), strs(m.NotNamespaces), strs(m.Principals), strs(m.NotPrincipals)
	sips, nsips, dips, ndips := nets(m.SourceIPs), nets(m.NotSourceIPs), nets(m.DestinationIPs), nets(m.NotDestinationIPs)
	if len(ns)+len(nns)+len(ps)+len(nps)+len(sips)+len(nsips)+len(dips)+len(ndips)+len(m.ServiceAccounts)+
		len(m.NotServiceAccounts)+len(m.DestinationPorts)+len(m.NotDestinationPorts) == 0 {
		return false // RbacMatch::is_empty
	}

	id := ""
	if !c.SourceIdentity.IsZero() {
		id = c.SourceIdentity.String()
	}
	// ztunnel's identities are all spiffe://<td>/ns/<ns>/sa/<sa>; another shape has no namespace or account.
	var idNS, idSA string
	if seg := strings.Split(c.SourceIdentity.Path(), "/"); len(seg) == 5 && seg[1] == "ns" && seg[3] == "sa" {
		idNS, idSA = seg[2], seg[4]
	}
	matches := func(s XDSStringMatch, v string) bool {
		switch {
		case s.Presence:
			return v != ""
		case s.Prefix != "":
			return strings.HasPrefix(v, s.Prefix)
		case s.Suffix != "":
			return strings.HasSuffix(v, s.Suffix)
		}
		return s.Exact == v
	}
	matchesPrincipal := func(s XDSStringMatch) bool {
		rest, ok := strings.CutPrefix(id, "spiffe://")
		return ok && matches(s, rest)
	}
	srcIP, dstIP := c.SourceIP.Unmap(), c.DestIP.Unmap()
	return refField(dips, ndips, func(p netip.Prefix) bool { return p.Contains(dstIP) }) &&
		refField(sips, nsips, func(p netip.Prefix) bool { return p.Contains(srcIP) }) &&
		refField(m.DestinationPorts, m.NotDestinationPorts, func(p uint16) bool { return p == c.DestPort }) &&
		refField(m.ServiceAccounts, m.NotServiceAccounts, func(s XDSServiceAccountMatch) bool {
			return idSA != "" && s.Namespace == idNS && s.ServiceAccount == idSA
		}) &&
		refField(ps, nps, matchesPrincipal) &&
		refField(ns, nns, func(s XDSStringMatch) bool { return matches(s, idNS) })
}

// refField is matches_internal: positive values, if any, must have one that holds; negative ones none.
func refField[T any](positive, negative []T, pred func(T) bool) bool {
	return (len(positive) == 0 || slices.ContainsFunc(positive, pred)) && !slices.ContainsFunc(negative, pred)
}
