package routes

import (
	"cmp"
	"fmt"
	"net/textproto"
	"slices"
	"strings"
	"time"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Set is the compiled routes, per parent service. It is immutable.
type Set struct {
	byParent map[string][]*entry // "namespace/name" of the service -> its rules' matches, in precedence order
	tcp      map[string][]*entry // TCPRoutes: "namespace/name" -> one entry per parent port, in route order
	status   []Status
}

// entry is one match of one rule of one route, for one parent.
type entry struct {
	port   uint16 // the parentRef's port; 0: every port of the service
	match  match
	action *Action
	order  int // the route's place, then the rule's and the match's, for ties
}

// Action is what a matched rule does with a request.
type Action struct {
	Route string // "Kind namespace/name", for telemetry and the access log
	Rule  int    // the rule's index in the route
	// Backends are the weighted backends; a request picks one by weight (Pick). Invalid ones answer 500.
	Backends        []Backend
	RequestHeaders  HeaderModifier
	ResponseHeaders HeaderModifier
	Redirect        *Redirect
	Rewrite         *Rewrite
	// Mirrors are services that get a copy of a share of the requests (RequestMirror filters); their answers
	// are dropped.
	Mirrors []Mirror
	// Timeout bounds the whole request (spec.rules[].timeouts.request); 0: none.
	Timeout time.Duration
	// Invalid says why the rule cannot be honoured ("" when it can): its requests are answered 500.
	Invalid string
}

// Backend is a service a rule sends requests to.
type Backend struct {
	Namespace, Name string
	Port            uint16
	Weight          int32
	// Invalid says why the backend cannot be used ("" when it can): requests it is picked for answer 500.
	Invalid string
}

// Key is the backend service's "namespace/name".
func (b Backend) Key() string { return b.Namespace + "/" + b.Name }

// HeaderModifier sets, adds and removes headers (names canonical).
type HeaderModifier struct {
	Set, Add []Header
	Remove   []string
}

// Header is one header name and value.
type Header struct{ Name, Value string }

// Apply changes h as m says: remove, then set, then add.
func (m HeaderModifier) Apply(h map[string][]string) {
	for _, n := range m.Remove {
		delete(h, n)
	}
	for _, s := range m.Set {
		h[s.Name] = []string{s.Value}
	}
	for _, a := range m.Add {
		h[a.Name] = append(h[a.Name], a.Value)
	}
}

// Mirror sends a copy of Numerator/Denominator of the requests to Backend (Weight unused).
type Mirror struct {
	Backend                Backend
	Numerator, Denominator int32
}

// Sample reports whether this request is copied, with intn (rand.IntN).
func (m Mirror) Sample(intn func(int) int) bool {
	return m.Numerator >= m.Denominator || m.Numerator > 0 && intn(int(m.Denominator)) < int(m.Numerator)
}

// mirror compiles a RequestMirror filter of a rule of namespace ns. A mirror the waypoint could not honour
// (its backend, its share) makes the rule invalid, as a backend would.
func mirror(ns string, f *gatewayv1.HTTPRequestMirrorFilter) (Mirror, error) {
	if f == nil {
		return Mirror{}, fmt.Errorf("RequestMirror without requestMirror")
	}
	m := Mirror{Backend: backend(ns, gatewayv1.BackendRef{BackendObjectReference: f.BackendRef}), Numerator: 100, Denominator: 100}
	switch {
	case m.Backend.Invalid != "":
		return Mirror{}, fmt.Errorf("requestMirror.backendRef %s: %s", m.Backend.Key(), m.Backend.Invalid)
	case f.Percent != nil && f.Fraction != nil:
		return Mirror{}, fmt.Errorf("requestMirror: percent and fraction are exclusive")
	case f.Percent != nil && (*f.Percent < 0 || *f.Percent > 100):
		return Mirror{}, fmt.Errorf("requestMirror.percent %d: 0 to 100", *f.Percent)
	case f.Percent != nil:
		m.Numerator = *f.Percent
	case f.Fraction != nil:
		m.Numerator, m.Denominator = f.Fraction.Numerator, ptrOr(f.Fraction.Denominator, 100)
		if m.Numerator < 0 || m.Denominator < 1 || m.Numerator > m.Denominator {
			return Mirror{}, fmt.Errorf("requestMirror.fraction %d/%d: 0 <= numerator <= denominator, denominator >= 1", m.Numerator, m.Denominator)
		}
	}
	return m, nil
}

// Redirect answers the request with a redirect instead of sending it anywhere.
type Redirect struct {
	Scheme, Hostname string
	Port             uint16
	Path             *PathModifier
	StatusCode       int // 301 or 302
}

// Rewrite changes the request before it goes to the backend.
type Rewrite struct {
	Hostname string
	Path     *PathModifier
}

// PathModifier replaces the whole path, or the prefix the rule matched.
type PathModifier struct {
	FullPath      string // when set, the new path
	PrefixMatch   string // when set (or "/"), the matched prefix is replaced with it
	ReplacePrefix bool
}

// Status is what became of one route: accepted for the parents the node agent serves (Services), and whether
// its backends resolve.
type Status struct {
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Source    string   `json:"source"`
	Parents   []string `json:"parents"`           // the services it attaches to, "namespace/name" or "namespace/name:port"
	Accepted  bool     `json:"accepted"`          // it attaches to at least one Service and every rule compiled
	Reasons   []string `json:"reasons,omitempty"` // why a parent or a rule is not used
	// Backends are the backend services its rules name, "namespace/name:port".
	Backends []string `json:"backends,omitempty"`
}

// Compile turns routes into a Set. A route with no Service parent is not accepted (parents of other kinds,
// Gateways, are for a gateway, not the node agent); a rule with a filter or a match it cannot honour is left
// out, so that a route never does less than it says: its requests then match another rule or none (404).
func Compile(routes []Route) *Set {
	s := &Set{byParent: map[string][]*entry{}, tcp: map[string][]*entry{}}
	sorted := slices.Clone(routes)
	slices.SortStableFunc(sorted, func(a, b Route) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name), strings.Compare(a.Kind, b.Kind))
	})
	for i := range sorted {
		s.compileRoute(&sorted[i], i)
	}
	for key, es := range s.byParent {
		slices.SortStableFunc(es, func(a, b *entry) int {
			return cmp.Or(a.match.precedence(b.match), cmp.Compare(a.order, b.order))
		})
		s.byParent[key] = es
	}
	return s
}

func (s *Set) compileRoute(r *Route, order int) {
	st := Status{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name, Source: r.Source.String(), Accepted: true}
	var parents []gatewayv1.ParentReference
	var rules []compiledRule
	byParent := s.byParent
	switch {
	case r.TCP != nil:
		parents, byParent = r.TCP.Spec.ParentRefs, s.tcp
		for i, rule := range r.TCP.Spec.Rules {
			cr := newRule[gatewayv1.HTTPRouteMatch](r, i, nil, nil, rule.BackendRefs, false)
			if i > 0 { // a TCP connection has nothing to match rules by: the first rule is the route
				cr = compiledRule{err: "a TCPRoute's rules after the first are not used"}
			}
			rules = append(rules, cr)
		}
	case r.HTTP != nil:
		parents = r.HTTP.Spec.ParentRefs
		for i, rule := range r.HTTP.Spec.Rules {
			rules = append(rules, compileHTTPRule(r, i, rule))
		}
	default:
		parents = r.GRPC.Spec.ParentRefs
		for i, rule := range r.GRPC.Spec.Rules {
			rules = append(rules, compileGRPCRule(r, i, rule))
		}
	}
	type parent struct {
		key  string
		port uint16
	}
	var ps []parent
	for i, p := range parents {
		if g := ptrOr(p.Group, ""); (g != "" && g != "core") || ptrOr(p.Kind, "Gateway") != "Service" {
			st.Reasons = append(st.Reasons, fmt.Sprintf("parentRefs[%d]: %s %s is not a Service: not for the node agent", i, ptrOr(p.Kind, "Gateway"), p.Name))
			continue
		}
		if ns := string(ptrOr(p.Namespace, gatewayv1.Namespace(r.Namespace))); ns != r.Namespace {
			// A consumer route (GAMMA) applies to the clients of its own namespace only, which the waypoint of
			// the service does not tell apart: not supported rather than applied to every client.
			st.Reasons = append(st.Reasons, fmt.Sprintf("parentRefs[%d]: Service %s/%s is in another namespace: consumer routes are not supported", i, ns, p.Name))
			continue
		}
		pp := parent{key: r.Namespace + "/" + string(p.Name), port: uint16(ptrOr(p.Port, 0))}
		ps = append(ps, pp)
		name := pp.key
		if pp.port != 0 {
			name = fmt.Sprintf("%s:%d", pp.key, pp.port)
		}
		st.Parents = append(st.Parents, name)
	}
	if len(ps) == 0 {
		st.Accepted = false
		st.Reasons = append(st.Reasons, "no parentRef names a Service")
	}
	for ri, cr := range rules {
		if r.TCP != nil && ri > 0 {
			st.Reasons = append(st.Reasons, fmt.Sprintf("rules[%d]: %s", ri, cr.err))
			continue
		}
		if cr.err != "" {
			// A rule the waypoint cannot honour is never skipped (its requests would reach a broader rule, or the
			// service, without what it asks for): its requests are answered 500, as the Gateway API says. When its
			// matches are what failed, every request to the parents is.
			st.Accepted = false
			st.Reasons = append(st.Reasons, fmt.Sprintf("rules[%d]: %s: its requests are answered 500", ri, cr.err))
			cr.action = &Action{Route: r.Kind + " " + r.Key(), Rule: ri, Invalid: cr.err}
			if cr.matches == nil {
				cr.matches = []match{{pathType: pathPrefix, path: "/"}}
			}
		}
		for _, b := range cr.action.Backends {
			st.Backends = append(st.Backends, fmt.Sprintf("%s:%d", b.Key(), b.Port))
			if b.Invalid != "" {
				st.Reasons = append(st.Reasons, fmt.Sprintf("rules[%d]: backend %s: %s", ri, b.Key(), b.Invalid))
			}
		}
		for _, m := range cr.action.Mirrors {
			st.Backends = append(st.Backends, fmt.Sprintf("%s:%d", m.Backend.Key(), m.Backend.Port))
		}
		for _, p := range ps {
			for mi, m := range cr.matches {
				byParent[p.key] = append(byParent[p.key], &entry{port: p.port, match: m, action: cr.action, order: order<<20 | ri<<10 | mi})
			}
		}
	}
	s.status = append(s.status, st)
}

type compiledRule struct {
	matches []match
	action  *Action
	err     string
}

func compileHTTPRule(r *Route, index int, rule gatewayv1.HTTPRouteRule) compiledRule {
	refs, filtered := backendRefs(rule.BackendRefs, func(b gatewayv1.HTTPBackendRef) (gatewayv1.BackendRef, bool) {
		return b.BackendRef, len(b.Filters) > 0
	})
	cr := newRule(r, index, rule.Matches, compileHTTPMatch, refs, filtered)
	if cr.err != "" {
		return cr
	}
	a := cr.action
	if err := compileFilters(a, r.Namespace, rule.Filters); err != nil {
		return compiledRule{matches: cr.matches, err: err.Error()}
	}
	if a.Redirect != nil && len(a.Backends) > 0 {
		return compiledRule{matches: cr.matches, err: "a RequestRedirect filter with backendRefs"}
	}
	if rule.Timeouts != nil && rule.Timeouts.Request != nil {
		d, err := time.ParseDuration(string(*rule.Timeouts.Request))
		if err != nil {
			return compiledRule{matches: cr.matches, err: fmt.Sprintf("timeouts.request %q: %v", *rule.Timeouts.Request, err)}
		}
		a.Timeout = d
	}
	return cr
}

func compileGRPCRule(r *Route, index int, rule gatewayv1.GRPCRouteRule) compiledRule {
	refs, filtered := backendRefs(rule.BackendRefs, func(b gatewayv1.GRPCBackendRef) (gatewayv1.BackendRef, bool) {
		return b.BackendRef, len(b.Filters) > 0
	})
	cr := newRule(r, index, rule.Matches, compileGRPCMatch, refs, filtered)
	if cr.err != "" {
		return cr
	}
	for i, f := range rule.Filters {
		switch f.Type {
		case gatewayv1.GRPCRouteFilterRequestHeaderModifier:
			cr.action.RequestHeaders = headerModifier(f.RequestHeaderModifier)
		case gatewayv1.GRPCRouteFilterResponseHeaderModifier:
			cr.action.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
		case gatewayv1.GRPCRouteFilterRequestMirror:
			m, err := mirror(r.Namespace, f.RequestMirror)
			if err != nil {
				return compiledRule{matches: cr.matches, err: fmt.Sprintf("filters[%d]: %v", i, err)}
			}
			cr.action.Mirrors = append(cr.action.Mirrors, m)
		default:
			return compiledRule{matches: cr.matches, err: fmt.Sprintf("filters[%d]: %s is not supported", i, f.Type)}
		}
	}
	return cr
}

// backendRefs are a rule's backend references, and whether any has filters of its own.
func backendRefs[B any](bs []B, ref func(B) (gatewayv1.BackendRef, bool)) ([]gatewayv1.BackendRef, bool) {
	out := make([]gatewayv1.BackendRef, len(bs))
	filtered := false
	for i, b := range bs {
		var f bool
		out[i], f = ref(b)
		filtered = filtered || f
	}
	return out, filtered
}

// newRule compiles what HTTP and gRPC rules share: their matches (none: every request) and backends.
func newRule[M any](r *Route, index int, matches []M, compile func(M) (match, error), refs []gatewayv1.BackendRef, filtered bool) compiledRule {
	cr := compiledRule{action: &Action{Route: r.Kind + " " + r.Key(), Rule: index}}
	for _, m := range matches {
		cm, err := compile(m)
		if err != nil {
			return compiledRule{err: err.Error()} // no matches: every request of the parents
		}
		cr.matches = append(cr.matches, cm)
	}
	if len(cr.matches) == 0 {
		cr.matches = []match{{pathType: pathPrefix, path: "/"}}
	}
	if filtered {
		return compiledRule{matches: cr.matches, err: "filters on a backendRef are not supported"}
	}
	for _, b := range refs {
		cr.action.Backends = append(cr.action.Backends, backend(r.Namespace, b))
	}
	return cr
}

// backend resolves a backendRef to a service of the mesh. Only Services are backends; the port is required.
func backend(ns string, ref gatewayv1.BackendRef) Backend {
	b := Backend{Namespace: string(ptrOr(ref.Namespace, gatewayv1.Namespace(ns))), Name: string(ref.Name), Port: uint16(ptrOr(ref.Port, 0)),
		Weight: ptrOr(ref.Weight, 1)}
	switch {
	case (ptrOr(ref.Group, "") != "" && ptrOr(ref.Group, "") != "core") || ptrOr(ref.Kind, "Service") != "Service":
		b.Invalid = fmt.Sprintf("kind %s of group %q is not a Service", ptrOr(ref.Kind, "Service"), ptrOr(ref.Group, ""))
	case b.Port == 0:
		b.Invalid = "a Service backend needs a port"
	case b.Namespace != ns:
		b.Invalid = "a backend in another namespace needs a ReferenceGrant, which the node agent does not read"
	}
	return b
}

func compileFilters(a *Action, ns string, fs []gatewayv1.HTTPRouteFilter) error {
	for i, f := range fs {
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			a.RequestHeaders = headerModifier(f.RequestHeaderModifier)
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			a.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			rr := f.RequestRedirect
			if rr == nil {
				return fmt.Errorf("filters[%d]: RequestRedirect without requestRedirect", i)
			}
			rd := &Redirect{Scheme: ptrOr(rr.Scheme, ""), Hostname: string(ptrOr(rr.Hostname, "")), Port: uint16(ptrOr(rr.Port, 0)),
				StatusCode: ptrOr(rr.StatusCode, 302)}
			if rd.StatusCode != 301 && rd.StatusCode != 302 {
				return fmt.Errorf("filters[%d]: statusCode %d: 301 or 302", i, rd.StatusCode)
			}
			pm, err := pathModifier(rr.Path)
			if err != nil {
				return fmt.Errorf("filters[%d]: %w", i, err)
			}
			rd.Path = pm
			a.Redirect = rd
		case gatewayv1.HTTPRouteFilterURLRewrite:
			rw := f.URLRewrite
			if rw == nil {
				return fmt.Errorf("filters[%d]: URLRewrite without urlRewrite", i)
			}
			pm, err := pathModifier(rw.Path)
			if err != nil {
				return fmt.Errorf("filters[%d]: %w", i, err)
			}
			a.Rewrite = &Rewrite{Hostname: string(ptrOr(rw.Hostname, "")), Path: pm}
		case gatewayv1.HTTPRouteFilterRequestMirror:
			m, err := mirror(ns, f.RequestMirror)
			if err != nil {
				return fmt.Errorf("filters[%d]: %w", i, err)
			}
			a.Mirrors = append(a.Mirrors, m)
		default:
			return fmt.Errorf("filters[%d]: %s is not supported", i, f.Type)
		}
	}
	return nil
}

func headerModifier(f *gatewayv1.HTTPHeaderFilter) HeaderModifier {
	var m HeaderModifier
	if f == nil {
		return m
	}
	for _, h := range f.Set {
		m.Set = append(m.Set, Header{Name: textproto.CanonicalMIMEHeaderKey(string(h.Name)), Value: h.Value})
	}
	for _, h := range f.Add {
		m.Add = append(m.Add, Header{Name: textproto.CanonicalMIMEHeaderKey(string(h.Name)), Value: h.Value})
	}
	for _, n := range f.Remove {
		m.Remove = append(m.Remove, textproto.CanonicalMIMEHeaderKey(n))
	}
	return m
}

func pathModifier(p *gatewayv1.HTTPPathModifier) (*PathModifier, error) {
	if p == nil {
		return nil, nil
	}
	switch p.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath == nil {
			return nil, fmt.Errorf("path: ReplaceFullPath without replaceFullPath")
		}
		return &PathModifier{FullPath: *p.ReplaceFullPath}, nil
	case gatewayv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch == nil {
			return nil, fmt.Errorf("path: ReplacePrefixMatch without replacePrefixMatch")
		}
		return &PathModifier{PrefixMatch: *p.ReplacePrefixMatch, ReplacePrefix: true}, nil
	}
	return nil, fmt.Errorf("path: type %q is not supported", p.Type)
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// Statuses are the routes' statuses; exists says whether a service "namespace/name" is known now, for the
// parents and backends that do not resolve.
func (s *Set) Statuses(exists func(namespace, name string) bool) []Status {
	out := make([]Status, 0, len(s.status))
	for _, st := range s.status {
		st.Reasons = slices.Clone(st.Reasons)
		if exists != nil {
			for _, p := range st.Parents {
				ns, name, _ := strings.Cut(strings.SplitN(p, ":", 2)[0], "/")
				if !exists(ns, name) {
					st.Reasons = append(st.Reasons, "parent service "+p+" is not known")
				}
			}
			for _, b := range st.Backends {
				ns, name, _ := strings.Cut(strings.SplitN(b, ":", 2)[0], "/")
				if !exists(ns, name) {
					st.Reasons = append(st.Reasons, "backend service "+b+" is not known (unresolved ref)")
				}
			}
		}
		out = append(out, st)
	}
	return out
}

// TCPRoute is the TCPRoute rule for connections to port of service "namespace/name": of the routes attached to
// that port (or to every port), the first by namespace and name. false: none, the service itself.
func (s *Set) TCPRoute(namespace, name string, port uint16) (*Action, bool) {
	if s == nil {
		return nil, false
	}
	for _, e := range s.tcp[namespace+"/"+name] {
		if e.port == 0 || e.port == port {
			return e.action, true
		}
	}
	return nil, false
}
