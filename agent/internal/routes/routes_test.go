package routes

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

// The seed's example: every request to echo goes to echo-v1.
const seed = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: echo
  namespace: default
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: echo
  rules:
  - backendRefs:
    - name: echo-v1
      port: 80
`

const mixed = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
  - matches: [{headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: reviews-canary, port: 9080}]
  - matches: [{path: {type: Exact, value: /health}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /healthz}, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /api/}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-via, value: waypoint}], remove: [x-drop]}}
    backendRefs: [{name: reviews-v2, port: 9080}]
  - backendRefs:
    - {name: reviews-v1, port: 9080, weight: 90}
    - {name: reviews-v2, port: 9080, weight: 10}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other, namespace: shop}
spec: {}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: greeter}]
  rules:
  - matches: [{method: {service: helloworld.Greeter, method: SayHello}}]
    backendRefs: [{name: greeter-v2, port: 50051}]
  - backendRefs: [{name: greeter-v1, port: 50051}]
`

func mustCompile(t *testing.T, files ...string) *Set {
	t.Helper()
	var all []Route
	for i, f := range files {
		rs, ps := Parse("file"+string(rune('0'+i)), []byte(f))
		if len(ps) > 0 {
			t.Fatalf("problems: %v", ps)
		}
		all = append(all, rs...)
	}
	return Compile(all)
}

func req(method, target string, headers ...string) *Request {
	u, _ := url.Parse(target)
	r := &Request{Method: method, Path: u.Path, Query: u.Query(), Header: map[string][]string{}}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header[headers[i]] = append(r.Header[headers[i]], headers[i+1])
	}
	return r
}

func TestSeedRoute(t *testing.T) {
	s := mustCompile(t, seed)
	for _, p := range []string{"/", "/anything?x=1", "/a/b"} {
		res, routed := s.Route("default", "echo", 80, req("GET", p))
		if !routed || res == nil {
			t.Fatalf("%s: not routed", p)
		}
		b, ok := res.Pick(func(int) int { return 0 })
		if !ok || b.Key() != "default/echo-v1" || b.Port != 80 {
			t.Errorf("%s went to %+v", p, b)
		}
	}
	if _, routed := s.Route("default", "other", 80, req("GET", "/")); routed {
		t.Error("a service without routes was routed")
	}
	if st := s.Statuses(nil); len(st) != 1 || !st[0].Accepted || st[0].Parents[0] != "default/echo" {
		t.Errorf("status %+v", st)
	}
}

func TestMatchPrecedenceAndFilters(t *testing.T) {
	s := mustCompile(t, mixed)
	backendOf := func(r *Request, port uint16) string {
		res, routed := s.Route("shop", "reviews", port, r)
		switch {
		case !routed:
			return "not routed"
		case res == nil:
			return "404"
		case res.Redirect != nil:
			return "redirect " + res.Redirect.Path.RewritePath(r.Path, res.Prefix)
		}
		b, ok := res.Pick(func(int) int { return 0 })
		if !ok {
			return "500"
		}
		return b.Name
	}
	for _, tc := range []struct {
		r    *Request
		want string
	}{
		{req("GET", "/"), "reviews-v1"},
		{req("GET", "/", "X-Canary", "yes"), "reviews-canary"},
		{req("GET", "/", "X-Canary", "no"), "reviews-v1"},
		{req("GET", "/health"), "redirect /healthz"},
		{req("GET", "/health/x"), "reviews-v1"},
		{req("GET", "/api/items"), "reviews-v2"},
		{req("GET", "/api"), "reviews-v2"},
		{req("GET", "/apis"), "reviews-v1"},
	} {
		if got := backendOf(tc.r, 9080); got != tc.want {
			t.Errorf("%s %s %v: %s, want %s", tc.r.Method, tc.r.Path, tc.r.Header, got, tc.want)
		}
	}
	if got := backendOf(req("GET", "/"), 80); got != "not routed" {
		t.Errorf("port 80 (the route is for 9080): %s", got)
	}
	res, _ := s.Route("shop", "reviews", 9080, req("GET", "/api/items"))
	if got := res.Rewrite.Path.RewritePath("/api/items", res.Prefix); got != "/v2/items" {
		t.Errorf("rewrite: %s", got)
	}
	h := map[string][]string{"X-Drop": {"1"}, "X-Via": {"client"}}
	res.RequestHeaders.Apply(h)
	if len(h) != 1 || h["X-Via"][0] != "waypoint" {
		t.Errorf("headers after the modifier: %v", h)
	}
	// 90/10 by weight.
	res, _ = s.Route("shop", "reviews", 9080, req("GET", "/"))
	counts := map[string]int{}
	for i := range 100 {
		b, _ := res.Pick(func(n int) int { return i % n })
		counts[b.Name]++
	}
	if counts["reviews-v1"] != 90 || counts["reviews-v2"] != 10 {
		t.Errorf("weights: %v", counts)
	}
	// gRPC: the method's path, else the default rule.
	g, _ := s.Route("shop", "greeter", 50051, req("POST", "/helloworld.Greeter/SayHello"))
	if b, _ := g.Pick(func(int) int { return 0 }); b.Name != "greeter-v2" {
		t.Errorf("SayHello went to %s", b.Name)
	}
	g, _ = s.Route("shop", "greeter", 50051, req("POST", "/helloworld.Greeter/Other"))
	if b, _ := g.Pick(func(int) int { return 0 }); b.Name != "greeter-v1" {
		t.Errorf("Other went to %s", b.Name)
	}
}

func TestProblemsAndStatus(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{strings.Replace(seed, "backendRefs:", "backendRefz:", 1), "unknown field"},
		{strings.Replace(seed, "  namespace: default\n", "", 1), "metadata.namespace is required"},
		{strings.Replace(seed, "gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1alpha9", 1), "not supported"},
		{seed + "---\n" + seed, "defined twice"},
	} {
		if _, ps := Parse("f", []byte(tc.doc)); len(ps) == 0 || !strings.Contains(Problems(ps).Error(), tc.want) {
			t.Errorf("problems %v, want %q", ps, tc.want)
		}
	}
	bad := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
  parentRefs: [{name: gw}, {group: "", kind: Service, name: svc}, {group: "", kind: Service, name: svc, namespace: elsewhere}]
  rules:
  - matches: [{path: {type: RegularExpression, value: "(("}}]
    backendRefs: [{name: a, port: 80}]
  - filters: [{type: CORS, cors: {}}]
    backendRefs: [{name: a, port: 80}]
  - backendRefs: [{name: b}, {name: c, port: 80, namespace: other}, {kind: Pod, name: d, port: 80}]
`
	s := mustCompile(t, bad)
	st := s.Statuses(func(ns, name string) bool { return name != "b" })
	if len(st) != 1 || st[0].Accepted {
		t.Fatalf("status %+v", st)
	}
	all := strings.Join(st[0].Reasons, "\n")
	for _, want := range []string{"Gateway gw is not a Service", "consumer routes are not supported", "rules[0]: path", "rules[1]: filters[0]: CORS is not supported",
		"needs a port", "ReferenceGrant", "kind Pod", "backend service ns/b:0 is not known"} {
		if !strings.Contains(all, want) {
			t.Errorf("reasons lack %q:\n%s", want, all)
		}
	}
	// A rule the waypoint cannot honour is never skipped: its requests answer 500 (Invalid), and a rule whose
	// match does not compile takes every request of the parent.
	res, routed := s.Route("ns", "svc", 80, req("GET", "/x"))
	if !routed || res == nil || !strings.Contains(res.Invalid, "path") {
		t.Fatalf("a request to svc: %+v, want the invalid regex rule's 500", res)
	}
	cors := mustCompile(t, strings.Replace(seed, "  - backendRefs:", "  - filters: [{type: CORS, cors: {}}]\n    backendRefs:", 1))
	if res, routed := cors.Route("default", "echo", 80, req("GET", "/")); !routed || res == nil || !strings.Contains(res.Invalid, "CORS") {
		t.Errorf("a request under a CORS rule: %+v, want a 500 (the rule is not skipped)", res)
	}
	// The last rule's backends, all invalid, answer 500 when picked.
	last := mustCompile(t, strings.Replace(strings.Replace(bad, `value: "(("`, `value: "/ok"`, 1), "filters: [{type: CORS, cors: {}}]", "matches: [{path: {value: /c}}]", 1))
	res, _ = last.Route("ns", "svc", 80, req("GET", "/x"))
	if res == nil || res.Invalid != "" {
		t.Fatalf("/x: %+v", res)
	}
	if b, ok := res.Pick(func(int) int { return 0 }); !ok || b.Invalid == "" {
		t.Errorf("picked %+v, want an invalid backend", b)
	}
}

// FuzzRoute: whatever the request, matching never panics, and a result always carries an action.
func FuzzRoute(f *testing.F) {
	s := Compile(func() []Route {
		rs, _ := Parse("f", []byte(mixed))
		return rs
	}())
	for _, seed := range []string{"/", "/api/x", "/health", "/helloworld.Greeter/SayHello", "//", "/api/../x", "%2F"} {
		f.Add("GET", seed, "x-canary", "yes")
	}
	f.Fuzz(func(t *testing.T, method, target, hname, hvalue string) {
		u, err := url.Parse(target)
		if err != nil {
			return
		}
		r := &Request{Method: method, Path: u.Path, Query: u.Query(), Header: map[string][]string{hname: {hvalue}}}
		for _, svc := range []string{"reviews", "greeter"} {
			res, routed := s.Route("shop", svc, 9080, r)
			if res != nil && (!routed || res.Action == nil) {
				t.Fatalf("%s %q: result without an action", method, target)
			}
			if res != nil && res.Rewrite != nil {
				_ = res.Rewrite.Path.RewritePath(r.Path, res.Prefix)
			}
		}
	})
}

// A TCPRoute attached to a service port sends its connections to the backends by weight; only its first rule
// counts (a connection has nothing to match rules by).
func TestTCPRoute(t *testing.T) {
	s := mustCompile(t, `apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: db, port: 5432}]
  rules:
  - backendRefs: [{name: db-a, port: 5432, weight: 3}, {name: db-b, port: 5433, weight: 1}]
  - backendRefs: [{name: db-c, port: 5432}]
`)
	if _, ok := s.TCPRoute("shop", "db", 5433); ok {
		t.Error("a connection to another port was routed")
	}
	a, ok := s.TCPRoute("shop", "db", 5432)
	if !ok || a.Invalid != "" {
		t.Fatalf("TCPRoute: %+v, %v", a, ok)
	}
	counts := map[string]int{}
	for i := range 4 {
		b, _ := a.Pick(func(n int) int { return i % n })
		counts[b.Name+":"+string(rune('0'+b.Port%10))]++
	}
	if counts["db-a:2"] != 3 || counts["db-b:3"] != 1 {
		t.Errorf("picks %v, want 3 of db-a and 1 of db-b", counts)
	}
	if _, routed := s.Route("shop", "db", 5432, req("GET", "/")); routed {
		t.Error("a TCPRoute routed an HTTP request")
	}
	st := s.Statuses(nil)
	if len(st) != 1 || !st[0].Accepted || !strings.Contains(strings.Join(st[0].Reasons, "\n"), "rules[1]: a TCPRoute's rules after the first are not used") {
		t.Errorf("status %+v", st)
	}
}

func TestRequestMirror(t *testing.T) {
	doc := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
  parentRefs: [{group: "", kind: Service, name: svc}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /all}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 8080}}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /tenth}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 8080}, fraction: {numerator: 1, denominator: 10}}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /none}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 8080}, percent: 0}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /elsewhere}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, namespace: other, port: 8080}}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /both}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 8080}, percent: 5, fraction: {numerator: 1}}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /over}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 8080}, fraction: {numerator: 3, denominator: 2}}}]
    backendRefs: [{name: a, port: 80}]
`
	s := mustCompile(t, doc)
	sampled := func(path string) int {
		res, _ := s.Route("ns", "svc", 80, req("GET", path))
		if res == nil || res.Invalid != "" || len(res.Mirrors) != 1 {
			t.Fatalf("%s: %+v, want one mirror", path, res)
		}
		m := res.Mirrors[0]
		if m.Backend.Key() != "ns/shadow" || m.Backend.Port != 8080 {
			t.Errorf("%s: mirror %+v", path, m)
		}
		n := 0
		for i := range 1000 {
			if m.Sample(func(k int) int { return i % k }) {
				n++
			}
		}
		return n
	}
	if n := sampled("/all"); n != 1000 {
		t.Errorf("a mirror without a share copied %d of 1000", n)
	}
	if n := sampled("/tenth"); n != 100 {
		t.Errorf("a mirror of 1/10 copied %d of 1000", n)
	}
	if n := sampled("/none"); n != 0 {
		t.Errorf("a mirror of 0%% copied %d of 1000", n)
	}
	for path, want := range map[string]string{"/elsewhere": "ReferenceGrant", "/both": "exclusive", "/over": "numerator <= denominator"} {
		if res, _ := s.Route("ns", "svc", 80, req("GET", path)); res == nil || !strings.Contains(res.Invalid, want) {
			t.Errorf("%s: %+v, want a 500 for %q", path, res, want)
		}
	}
	st := s.Statuses(nil)
	if len(st) != 1 || !slices.Contains(st[0].Backends, "ns/shadow:8080") {
		t.Errorf("status %+v, want the mirror among the backends", st)
	}
}
