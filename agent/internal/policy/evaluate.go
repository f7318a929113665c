package policy

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Conn is one inbound connection to a local workload, as authorization sees it (EvaluateWaypoint reads
// it for a connection through a waypoint: the destination is then the target, a service or a workload).
type Conn struct {
	DestNamespace  string            // the destination workload's namespace
	DestLabels     map[string]string // the destination workload's labels, for selectors
	DestIP         netip.Addr        // the local workload address
	DestPort       uint16            // the final target port (after any service port mapping)
	SourceIdentity spiffeid.ID       // the peer's verified identity; the zero ID for a plaintext source
	SourceIP       netip.Addr
	// BoundPolicies are the "namespace/name" keys of the istiod policies istiod bound to the destination
	// workload (its Workload's authorization_policies): how istiod's WORKLOAD_SELECTOR policies apply.
	// nil for a workload istiod does not know. Local policies use DestLabels, never this.
	BoundPolicies []string
	// Request is the HTTP request, at the waypoint's L7 (EvaluateWaypoint on an HTTP port); nil for a
	// connection.
	Request *Request
}

// Request is what a waypoint policy's L7 attributes match.
type Request struct {
	Method string
	Path   string // normalized, without the query
	Host   string // the Host header (:authority), with any port
	Header map[string][]string
}

// Reason says why a Decision went the way it did: a closed vocabulary for logs, metrics and `authz check`.
type Reason string

// Reasons, in evaluation order.
const (
	ReasonDenyMatched    Reason = "a DENY policy matched"
	ReasonNoAllowPolicy  Reason = "no ALLOW policy applies"
	ReasonAllowMatched   Reason = "an ALLOW policy matched"
	ReasonNoAllowMatched Reason = "ALLOW policies apply, none matched"
)

// Decision is the outcome of one evaluation and what decided it.
type Decision struct {
	Outcome
	// DryRun is set when dry-run policies apply to the connection: the outcome if they were enforced along
	// with the others. Log it; never enforce it.
	DryRun *Outcome
	// Audit is the first AUDIT policy (a waypoint's) that matches, "namespace/name": the request is to be
	// marked in the access log. It changes nothing else.
	Audit string
}

// Outcome is a verdict and what decided it.
type Outcome struct {
	Allow  bool
	Reason Reason
	Policy string // "namespace/name" of the deciding policy; "" when none (no policy, or no ALLOW matched)
	Kind   Kind   // the deciding policy's kind: a STRICT PeerAuthentication denies too
	Rule   int    // Index of the deciding rule (for an AuthorizationPolicy, in spec.rules); -1 when none
}

func (o Outcome) String() string {
	verdict := "DENY"
	if o.Allow {
		verdict = "ALLOW"
	}
	if o.Policy == "" {
		return fmt.Sprintf("%s: %s", verdict, o.Reason)
	}
	return fmt.Sprintf("%s: %s (%s %s, rule %d)", verdict, o.Reason, o.Kind, o.Policy, o.Rule)
}

func (d Decision) String() string {
	s := d.Outcome.String()
	if d.DryRun != nil {
		s += "; dry-run: " + d.DryRun.String()
	}
	return s
}

// maxInlinePolicies is how many applicable policies an evaluation holds without allocating.
const maxInlinePolicies = 16

// Evaluate decides one connection (spec/authz.md "Evaluation"): the policies considered are the GLOBAL
// ones, the NAMESPACE ones of the destination's namespace, the WORKLOAD_SELECTOR ones that select it (from
// its namespace or the root namespace) and the DENY derived from its effective PeerAuthentication; and of
// istiod's policies (WithXDS), the GLOBAL ones, the NAMESPACE ones of its namespace and those named in
// c.BoundPolicies, as ztunnel does.
//  1. any DENY policy matches: deny;
//  2. no ALLOW policy applies: allow;
//  3. any ALLOW policy matches: allow;
//  4. otherwise deny.
//
// Dry-run policies take no part; when some apply, Decision.DryRun says what they would change. When
// several policies match, the one first by (namespace, name, kind) is reported, local ones before istiod's.
func (s *Set) Evaluate(c Conn) Decision {
	var buf [maxInlinePolicies]*Authorization
	return evaluate(s.applicable(&c, buf[:0]), &c)
}

// evaluate runs decide over the applicable policies, and again with the dry-run ones when some apply.
func evaluate(applicable []*Authorization, c *Conn) Decision {
	src := peerOf(c.SourceIdentity, c.SourceIP)
	dst := target{ip: c.DestIP.Unmap(), port: c.DestPort, req: c.Request}
	d := Decision{Outcome: decide(applicable, &src, dst, false)}
	for _, a := range applicable {
		if a.Action == ActionAudit && !a.DryRun {
			if _, ok := a.matches(&src, dst); ok {
				d.Audit = a.Key()
				break
			}
		}
	}
	if slices.ContainsFunc(applicable, (*Authorization).isDryRun) {
		dry := decide(applicable, &src, dst, true)
		d.DryRun = &dry
	}
	return d
}

func (a *Authorization) isDryRun() bool { return a.DryRun }

// Applicable lists the policies Evaluate considers for c, in reporting order, dry-run ones included.
// `authz check` uses it to explain a decision.
func (s *Set) Applicable(c Conn) []Authorization {
	var buf [maxInlinePolicies]*Authorization
	return copies(s.applicable(&c, buf[:0]))
}

// copies are the policies as values, for callers outside the package.
func copies(ps []*Authorization) []Authorization {
	out := make([]Authorization, len(ps))
	for i, a := range ps {
		out[i] = *a
	}
	return out
}

// applicable appends the policies that apply to c's destination to out, sorted by ord.
func (s *Set) applicable(c *Conn, out []*Authorization) []*Authorization {
	if s == nil {
		return out
	}
	out = append(out, s.global...)
	if np := s.namespaces[c.DestNamespace]; np != nil {
		out = append(out, np.wide...)
		out = np.selectors.collect(c.DestLabels, out)
	}
	out = s.rootSelectors.collect(c.DestLabels, out)
	if pa := s.peers.effective(c.DestNamespace, c.DestLabels); pa != nil {
		out = append(out, pa)
	}
	if s.xds != nil {
		out = s.xds.collect(c, out)
	}
	sortByOrd(out)
	return out
}

// sortByOrd is an insertion sort: the list is short, and this keeps the evaluation free of allocations.
func sortByOrd(as []*Authorization) {
	for i := 1; i < len(as); i++ {
		for j := i; j > 0 && as[j].ord < as[j-1].ord; j-- {
			as[j], as[j-1] = as[j-1], as[j]
		}
	}
}

// decide runs the four steps over the applicable policies; withDryRun enforces the dry-run ones too.
func decide(applicable []*Authorization, src *peer, dst target, withDryRun bool) Outcome {
	for _, a := range applicable {
		if a.Action != ActionDeny || a.DryRun && !withDryRun {
			continue
		}
		if rule, ok := a.matches(src, dst); ok {
			return Outcome{Allow: false, Reason: ReasonDenyMatched, Policy: a.Key(), Kind: a.Kind, Rule: rule}
		}
	}
	allowApplies := false
	for _, a := range applicable {
		if a.Action != ActionAllow || a.DryRun && !withDryRun {
			continue
		}
		allowApplies = true
		if rule, ok := a.matches(src, dst); ok {
			return Outcome{Allow: true, Reason: ReasonAllowMatched, Policy: a.Key(), Kind: a.Kind, Rule: rule}
		}
	}
	if !allowApplies {
		return Outcome{Allow: true, Reason: ReasonNoAllowPolicy, Rule: -1}
	}
	return Outcome{Allow: false, Reason: ReasonNoAllowMatched, Rule: -1}
}
