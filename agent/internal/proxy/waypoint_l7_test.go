package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
)

// FuzzWaypointRequest runs what the waypoint does with a request's bytes before routing: net/http's HTTP/1
// parser, the path normalization, the refusals and the L7 authorization. Whatever the bytes, the path the routes
// and policies see is clean (absolute, no dot segments, no empty segments, stable), and a DENY on an exact path
// and one on a prefix deny exactly the requests whose normalized path they name: no spelling gets past them.
func FuzzWaypointRequest(f *testing.F) {
	for _, seed := range []string{
		"GET /admin HTTP/1.1\r\nHost: echo\r\n\r\n",
		"GET /x/../admin HTTP/1.1\r\nHost: echo\r\n\r\n",
		"GET //admin/ HTTP/1.1\r\nHost: echo\r\n\r\n",
		"GET /%61dmin?q=1 HTTP/1.1\r\nHost: echo\r\n\r\n",
		"GET /secret/./a HTTP/1.1\r\nHost: echo\r\n\r\n",
		"GET http://echo/secret/b HTTP/1.1\r\nHost: echo\r\n\r\n",
		"CONNECT echo:80 HTTP/1.1\r\nHost: echo:80\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: echo\r\n" + strings.Repeat("X-A: 1\r\n", 101) + "\r\n",
	} {
		f.Add([]byte(seed))
	}
	set := compilePolicies(f, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp}]
  action: DENY
  rules: [{to: [{operation: {paths: [/admin, /secret/*]}}]}]
`)
	at := policy.WaypointTarget{WaypointNamespace: "default", WaypointName: "wp"}
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		if e := refusal(req); e != nil {
			n := 0
			for _, vs := range req.Header {
				n += len(vs)
			}
			up := req.Header.Get("Upgrade")
			if n <= l7MaxHeaders && req.Method != http.MethodConnect && (up == "" || strings.EqualFold(up, "websocket")) {
				t.Fatalf("refused %q: %d %s", raw, e.code, e.msg)
			}
			return
		}
		p := normalizePath(req.URL.Path)
		if !strings.HasPrefix(p, "/") || strings.Contains(p, "//") || normalizePath(p) != p {
			t.Fatalf("path %q normalized to %q", req.URL.Path, p)
		}
		for _, seg := range strings.Split(p, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("path %q normalized to %q, with a dot segment", req.URL.Path, p)
			}
		}
		c := policy.Conn{SourceIdentity: spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/client"), SourceIP: netip.MustParseAddr("10.0.0.1"),
			DestNamespace: "default", DestIP: netip.MustParseAddr("10.0.0.2"), DestPort: 80,
			Request: &policy.Request{Method: req.Method, Path: p, Host: req.Host, Header: req.Header}}
		denied := !set.EvaluateWaypoint(c, at).Allow
		if want := p == "/admin" || strings.HasPrefix(p, "/secret/"); denied != want {
			t.Fatalf("%q (path %q): denied %v, want %v", raw, p, denied, want)
		}
	})
}
