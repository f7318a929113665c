package routes

import (
	"cmp"
	"fmt"
	"net/textproto"
	"net/url"
	"regexp"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Request is what routes match: an HTTP request in the package's own terms.
type Request struct {
	Method string
	Path   string              // the URL path, without the query
	Query  url.Values          // the query parameters
	Header map[string][]string // canonical names (an http.Header is one)
}

type pathType int

// In precedence order: exact, then prefix (longest first), then regular expressions (longest first).
const (
	pathExact pathType = iota
	pathPrefix
	pathRegex
)

type match struct {
	pathType pathType
	path     string
	re       *regexp.Regexp
	method   string
	headers  []valueMatch
	query    []valueMatch
}

type valueMatch struct {
	name  string // canonical for headers; as written for query parameters
	value string
	re    *regexp.Regexp
}

func (v valueMatch) matches(vals []string) bool {
	if len(vals) == 0 {
		return false
	}
	// Only the first value counts, as Envoy and the Gateway API conformance tests have it.
	if v.re != nil {
		return v.re.MatchString(vals[0])
	}
	return vals[0] == v.value
}

// maxRegex bounds a regular expression of a route, as Envoy bounds its program size.
const maxRegex = 1024

func compileRegex(what, expr string) (*regexp.Regexp, error) {
	if len(expr) > maxRegex {
		return nil, fmt.Errorf("%s: a regular expression of %d bytes (at most %d)", what, len(expr), maxRegex)
	}
	// Envoy's RE2 matches the whole value.
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	return re, nil
}

func compileHTTPMatch(m gatewayv1.HTTPRouteMatch) (match, error) {
	out := match{pathType: pathPrefix, path: "/"}
	if p := m.Path; p != nil {
		v := ptrOr(p.Value, "/")
		switch ptrOr(p.Type, gatewayv1.PathMatchPathPrefix) {
		case gatewayv1.PathMatchExact:
			out.pathType, out.path = pathExact, v
		case gatewayv1.PathMatchPathPrefix:
			out.pathType, out.path = pathPrefix, strings.TrimRight(v, "/")
			if out.path == "" {
				out.path = "/"
			}
		case gatewayv1.PathMatchRegularExpression:
			re, err := compileRegex("path", v)
			if err != nil {
				return match{}, err
			}
			out.pathType, out.path, out.re = pathRegex, v, re
		default:
			return match{}, fmt.Errorf("path: type %q is not supported", *p.Type)
		}
		if out.pathType != pathRegex && !strings.HasPrefix(v, "/") {
			return match{}, fmt.Errorf("path: %q does not start with /", v)
		}
	}
	if m.Method != nil {
		out.method = string(*m.Method)
	}
	for i, h := range m.Headers {
		vm, err := valueMatcher(fmt.Sprintf("headers[%d]", i), textproto.CanonicalMIMEHeaderKey(string(h.Name)), h.Value,
			string(ptrOr(h.Type, gatewayv1.HeaderMatchExact)))
		if err != nil {
			return match{}, err
		}
		out.headers = append(out.headers, vm)
	}
	for i, q := range m.QueryParams {
		vm, err := valueMatcher(fmt.Sprintf("queryParams[%d]", i), string(q.Name), q.Value, string(ptrOr(q.Type, gatewayv1.QueryParamMatchExact)))
		if err != nil {
			return match{}, err
		}
		out.query = append(out.query, vm)
	}
	return out, nil
}

// compileGRPCMatch turns a GRPCRoute match into the HTTP/2 request it stands for: a POST to /service/method.
func compileGRPCMatch(m gatewayv1.GRPCRouteMatch) (match, error) {
	out := match{pathType: pathPrefix, path: "/", method: "POST"}
	if mm := m.Method; mm != nil {
		svc, method := ptrOr(mm.Service, ""), ptrOr(mm.Method, "")
		switch ptrOr(mm.Type, gatewayv1.GRPCMethodMatchExact) {
		case gatewayv1.GRPCMethodMatchExact:
			switch {
			case svc != "" && method != "":
				out.pathType, out.path = pathExact, "/"+svc+"/"+method
			case svc != "":
				out.pathType, out.path = pathPrefix, "/"+svc
			case method != "":
				re, _ := compileRegex("method", "/[^/]+/"+regexp.QuoteMeta(method))
				out.pathType, out.path, out.re = pathRegex, method, re
			}
		case gatewayv1.GRPCMethodMatchRegularExpression:
			re, err := compileRegex("method", "/"+cmp.Or(svc, "[^/]+")+"/"+cmp.Or(method, "[^/]+"))
			if err != nil {
				return match{}, err
			}
			out.pathType, out.path, out.re = pathRegex, svc+"/"+method, re
		default:
			return match{}, fmt.Errorf("method: type %q is not supported", *mm.Type)
		}
	}
	for i, h := range m.Headers {
		vm, err := valueMatcher(fmt.Sprintf("headers[%d]", i), textproto.CanonicalMIMEHeaderKey(string(h.Name)), h.Value,
			string(ptrOr(h.Type, gatewayv1.GRPCHeaderMatchExact)))
		if err != nil {
			return match{}, err
		}
		out.headers = append(out.headers, vm)
	}
	return out, nil
}

func valueMatcher(what, name, value, typ string) (valueMatch, error) {
	switch typ {
	case "Exact":
		return valueMatch{name: name, value: value}, nil
	case "RegularExpression":
		re, err := compileRegex(what, value)
		if err != nil {
			return valueMatch{}, err
		}
		return valueMatch{name: name, value: value, re: re}, nil
	}
	return valueMatch{}, fmt.Errorf("%s: type %q is not supported", what, typ)
}

// precedence orders two matches of one parent (the Gateway API's rules): a better path match first (exact,
// then the longest prefix, then regular expressions), then one with a method, then more header matches, then
// more query parameter matches. Ties go to the route, rule and match order.
func (m match) precedence(o match) int {
	return cmp.Or(
		cmp.Compare(m.pathType, o.pathType),
		-cmp.Compare(len(m.path), len(o.path)),
		-cmp.Compare(boolInt(m.method != ""), boolInt(o.method != "")),
		-cmp.Compare(len(m.headers), len(o.headers)),
		-cmp.Compare(len(m.query), len(o.query)),
	)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (m *match) matches(r *Request) bool {
	switch m.pathType {
	case pathExact:
		if r.Path != m.path {
			return false
		}
	case pathPrefix:
		// Element-wise: /foo matches /foo, /foo/ and /foo/bar, not /foobar.
		if m.path != "/" && (!strings.HasPrefix(r.Path, m.path) || len(r.Path) > len(m.path) && r.Path[len(m.path)] != '/') {
			return false
		}
	case pathRegex:
		if !m.re.MatchString(r.Path) {
			return false
		}
	}
	if m.method != "" && r.Method != m.method {
		return false
	}
	for _, h := range m.headers {
		if !h.matches(r.Header[h.name]) {
			return false
		}
	}
	for _, q := range m.query {
		if !q.matches(r.Query[q.name]) {
			return false
		}
	}
	return true
}

// Result is the route a request matched.
type Result struct {
	*Action
	// Prefix is the path prefix the rule matched ("" unless a prefix match): what a prefix rewrite replaces.
	Prefix string
}

// Route finds the rule a request to port of service "namespace/name" matches. routed is false when no route
// attaches to the service on that port: the request goes to the service itself. With routes and no matching
// rule, routed is true and the result nil: Envoy answers such a request 404.
func (s *Set) Route(namespace, name string, port uint16, r *Request) (res *Result, routed bool) {
	if s == nil {
		return nil, false
	}
	for _, e := range s.byParent[namespace+"/"+name] {
		if e.port != 0 && e.port != port {
			continue
		}
		routed = true
		if e.match.matches(r) {
			res := &Result{Action: e.action}
			if e.match.pathType == pathPrefix {
				res.Prefix = e.match.path
			}
			return res, true
		}
	}
	return nil, routed
}

// Pick chooses a backend by weight with intn (rand.IntN); false when every weight is 0 or there is none.
func (a *Action) Pick(intn func(int) int) (Backend, bool) {
	total := 0
	for _, b := range a.Backends {
		total += int(max(b.Weight, 0))
	}
	if total == 0 {
		return Backend{}, false
	}
	n := intn(total)
	for _, b := range a.Backends {
		if n -= int(max(b.Weight, 0)); n < 0 {
			return b, true
		}
	}
	return Backend{}, false
}

// RewritePath is the path after pm for a request path that matched prefix.
func (pm *PathModifier) RewritePath(path, prefix string) string {
	switch {
	case pm == nil:
		return path
	case !pm.ReplacePrefix:
		return pm.FullPath
	case prefix == "" || prefix == "/":
		return strings.TrimRight(pm.PrefixMatch, "/") + "/" + strings.TrimLeft(path, "/")
	}
	rest := strings.TrimPrefix(path, prefix)
	out := strings.TrimRight(pm.PrefixMatch, "/") + rest
	if out == "" {
		return "/"
	}
	return out
}
