package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/routes"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
)

// The waypoint at L7 (docs/waypoint.md): a tunnel for a service port whose protocol is HTTP (app protocol http,
// http2 or grpc) is answered by the waypoint itself, as Envoy's waypoint does: it serves the tunnel as an HTTP
// connection (HTTP/1.1, or HTTP/2 with prior knowledge: h2c and gRPC), routes each request by the routes
// attached to the service (package routes; none: the service itself), picks an endpoint of the backend service
// and sends the request there over HBONE with the waypoint's identity, on connections kept per endpoint. The
// tunnel was authorized at L4 like any waypoint tunnel; each request is recorded with Istio's request metrics.

// l7Limits bound what one connection may hold.
const (
	l7MaxHeaderBytes = 64 << 10
	l7IdleTimeout    = time.Hour // Envoy's default idle timeout
	l7HeaderTimeout  = 30 * time.Second
	l7MaxStreams     = 250 // HTTP/2 streams at once on one connection
	l7MaxHeaders     = 100 // header fields of one request, Envoy's default max_headers_count
)

// isHTTPPort reports whether port of svc carries HTTP (its app protocol).
func isHTTPPort(svc *state.Service, port uint16) bool {
	switch appProtocol(svc, port) {
	case "http", "http2", "grpc":
		return true
	}
	return false
}

// upstreamH2 reports whether requests to port of svc go over HTTP/2 with prior knowledge (its app protocol is
// http2 or grpc), else HTTP/1.1.
func upstreamH2(svc *state.Service, port uint16) bool {
	p := appProtocol(svc, port)
	return p == "http2" || p == "grpc"
}

// appProtocol is the app protocol of port of svc ("" when it has none or no such port).
func appProtocol(svc *state.Service, port uint16) string {
	for _, p := range svc.Ports {
		if p.Port == port {
			return p.AppProtocol
		}
	}
	return ""
}

// l7Server serves the waypoint's HTTP connections, for every waypoint of the host.
type l7Server struct {
	h     *InboundHBONE
	srv   *http.Server
	conns *connQueue
	// ctx ends with the server (shutdownL7): the mirrored requests' context; mirrorSlots bounds them.
	ctx         context.Context
	stop        context.CancelFunc
	mirrorSlots chan struct{}

	mu sync.Mutex
	// transports keep the connections to endpoints, per waypoint identity and endpoint identity: a kept
	// connection only ever carries requests for the identity it verified when it opened.
	transports map[identityPair]*l7Transports
}

type l7Transports struct{ h1, h2 *http.Transport }

// identityPair is a waypoint's identity and an endpoint's.
type identityPair struct{ waypoint, endpoint spiffeid.ID }

// l7Conn is one tunnel the waypoint serves at L7.
type l7Conn struct {
	net.Conn
	call waypointCall
}

type l7ConnKey struct{}

// l7 returns the host's L7 server, started on first use.
func (h *InboundHBONE) l7() *l7Server {
	h.l7Once.Do(func() {
		s := &l7Server{h: h, conns: newConnQueue(), transports: map[identityPair]*l7Transports{}, mirrorSlots: make(chan struct{}, l7MaxMirrors)}
		s.ctx, s.stop = context.WithCancel(context.Background())
		var protocols http.Protocols
		protocols.SetHTTP1(true)
		protocols.SetUnencryptedHTTP2(true)
		s.srv = &http.Server{
			Handler:           s,
			Protocols:         &protocols,
			MaxHeaderBytes:    l7MaxHeaderBytes,
			ReadHeaderTimeout: l7HeaderTimeout,
			IdleTimeout:       l7IdleTimeout,
			HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: l7MaxStreams},
			ErrorLog:          nil,
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				return context.WithValue(ctx, l7ConnKey{}, c)
			},
		}
		go func() { _ = s.srv.Serve(s.conns) }()
		h.l7srv = s
	})
	return h.l7srv // nil once shutdownL7 ran first
}

// shutdownL7 stops the waypoint's HTTP server when the agent drains: idle connections close now, requests
// finish within ctx (hijacked ones, websockets, end with the HBONE server). No L7 server starts after it.
func (h *InboundHBONE) shutdownL7(ctx context.Context) {
	h.l7Once.Do(func() {})
	s := h.l7srv
	if s == nil {
		return
	}
	s.conns.Close()
	_ = s.srv.Shutdown(ctx)
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.transports {
		t.h1.CloseIdleConnections()
		t.h2.CloseIdleConnections()
	}
}

// serveWaypointL7 answers an authorized waypoint tunnel for an HTTP port of a service and hands it to the HTTP
// server. It owns unregister; revoker (a policy change that denies the caller) ends the connection.
func (h *InboundHBONE) serveWaypointL7(r *hbone.Request, snap *state.Snapshot, call waypointCall, t *inboundTunnel, revoker *hbone.Revoker, unregister func()) {
	if err := r.Accept(hbone.Baggage{}); err != nil {
		unregister()
		h.failed(r, snap, t, err)
		return
	}
	t.route = "waypoint_http"
	rec := h.record(r.Info(), snap, t)
	rec.Live(func() (int64, int64) { sent, received := r.Bytes(); return received, sent })
	conn, err := r.Hijack(revoker, func(s hbone.TunnelStats) {
		unregister()
		rec.Close(s.BytesReceived, s.BytesSent, istioFlag(s.Flag), errString(s.Err))
	})
	if err != nil {
		unregister()
		rec.Close(0, 0, istioFlag(hbone.FlagOf(err)), errString(err))
		return
	}
	srv := h.l7()
	if srv == nil { // draining
		_ = conn.Close()
		return
	}
	srv.conns.push(&l7Conn{Conn: conn, call: call})
}

// ServeHTTP handles one request of a waypoint connection: route, pick, send, record.
func (s *l7Server) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	c, _ := req.Context().Value(l7ConnKey{}).(*l7Conn)
	if c == nil {
		http.Error(w, "not a waypoint connection", http.StatusInternalServerError)
		return
	}
	start := time.Now()
	rw := &statusRecorder{ResponseWriter: w}
	snap := s.h.d.Snap()
	// Routes and policies see one path: cleaned of dot segments and repeated slashes, as Envoy's default
	// normalization does, and sent on as cleaned.
	req.URL.Path, req.URL.RawPath = normalizePath(req.URL.Path), ""
	var u upstream
	audit := ""
	call, err := current(snap, c.call, req)
	if err == nil {
		audit, err = s.authorize(call, req)
	}
	if err == nil {
		u, err = s.decide(snap, call, req)
	}
	if u.svc == nil {
		u.svc = call.wt.svc
	}
	switch {
	case err != nil:
		respond(rw, err.code, err.msg)
	case u.redirect != "":
		http.Redirect(rw, req, u.redirect, u.redirectCode)
	default:
		end := s.sendMirrors(req, snap, call, &u)
		s.forward(rw, req, snap, call, &u)
		end()
	}
	s.report(snap, c, req, rw, u, err, audit, time.Since(start))
}

// current is the call as the mesh has it now: a connection outlives the service state it started with, so each
// request finds the target again (the service may be gone, or no longer bound to this waypoint: 503). It first
// refuses what the waypoint never passes on (refusal).
func current(snap *state.Snapshot, call waypointCall, req *http.Request) (waypointCall, *httpError) {
	if err := refusal(req); err != nil {
		return call, err
	}
	wt, err := managedTarget(snap, call.wt.wp, call.target)
	if err != nil || wt.svc == nil {
		return call, &httpError{code: http.StatusServiceUnavailable, msg: "no healthy upstream"}
	}
	call.wt = wt
	return call, nil
}

// refusal refuses what the waypoint never passes on: more than l7MaxHeaders header fields (431, as Envoy's
// max_headers_count), CONNECT (403, as Envoy without CONNECT support), and upgrades other than to websocket (403, so that an upgrade to h2c
// cannot carry requests past routing and authorization).
func refusal(req *http.Request) *httpError {
	n := 0
	for _, vs := range req.Header {
		n += len(vs)
	}
	switch {
	case n > l7MaxHeaders:
		return &httpError{code: http.StatusRequestHeaderFieldsTooLarge, msg: "too many header fields"}
	case req.Method == http.MethodConnect:
		return &httpError{code: http.StatusForbidden, msg: "CONNECT is not allowed through the waypoint"}
	}
	if up := req.Header.Get("Upgrade"); up != "" && !strings.EqualFold(up, "websocket") {
		return &httpError{code: http.StatusForbidden, msg: "upgrade to " + up + " is not allowed through the waypoint"}
	}
	return nil
}

// authorize decides one request with the waypoint's policies, its L7 attributes included; a denial answers
// 403 "RBAC: access denied", as Envoy's RBAC filter does. audit is the AUDIT policy that matched, if any.
func (s *l7Server) authorize(call waypointCall, req *http.Request) (audit string, _ *httpError) {
	conn := call.conn
	conn.Request = &policy.Request{Method: req.Method, Path: req.URL.Path, Host: req.Host, Header: req.Header}
	dec := s.h.d.count(conn, s.h.d.Policy().EvaluateWaypoint(conn, call.at))
	if !dec.Allow {
		return dec.Audit, &httpError{code: http.StatusForbidden, msg: "RBAC: access denied", denied: true}
	}
	return dec.Audit, nil
}

// respond answers a request the waypoint decided itself, with Envoy's bodies ("RBAC: access denied").
func respond(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(msg)))
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg)
}

// normalizePath cleans a request path (dot segments, repeated slashes), keeping a final slash.
func normalizePath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// upstream is where one request goes.
type upstream struct {
	svc          *state.Service
	port         uint16 // the service port the request goes to
	w            *state.Workload
	addr         netip.AddrPort
	action       *routes.Action
	prefix       string
	redirect     string
	redirectCode int
}

type httpError struct {
	code   int
	msg    string
	denied bool // by policy
}

// decide routes req, a request to the call's service: the rule it matches and the backend that rule picks, or
// the service itself when no route attaches to it; then an endpoint of that backend the waypoint may reach.
func (s *l7Server) decide(snap *state.Snapshot, call waypointCall, req *http.Request) (upstream, *httpError) {
	svc, port := call.wt.svc, call.target.Port()
	u := upstream{svc: svc}
	var set *routes.Set
	if s.h.d.Routes != nil {
		set = s.h.d.Routes()
	}
	res, routed := set.Route(svc.Namespace, svc.Name, port,
		&routes.Request{Method: req.Method, Path: req.URL.Path, Query: req.URL.Query(), Header: req.Header})
	switch {
	case routed && res == nil:
		return u, &httpError{code: http.StatusNotFound, msg: "route not found"}
	case routed:
		u.action, u.prefix = res.Action, res.Prefix
		if res.Invalid != "" {
			return u, &httpError{code: http.StatusInternalServerError, msg: "route rule not supported: " + res.Invalid}
		}
		if rd := res.Redirect; rd != nil {
			u.redirect, u.redirectCode = redirectURL(req, rd, res.Prefix), rd.StatusCode
			return u, nil
		}
		b, ok := res.Pick(rand.IntN)
		if !ok {
			return u, &httpError{code: http.StatusInternalServerError, msg: "no backend"}
		}
		if b.Invalid != "" {
			return u, &httpError{code: http.StatusInternalServerError, msg: "backend " + b.Key() + ": " + b.Invalid}
		}
		backend, ok := snap.ServiceByKey(b.Key())
		if !ok {
			return u, &httpError{code: http.StatusInternalServerError, msg: "backend " + b.Key() + " is not known"}
		}
		u.svc, port = backend, b.Port
	}
	u.port = port
	w, addr, err := s.h.pickEndpoint(snap, waypointTarget{wp: call.wt.wp, svc: u.svc}, netip.AddrPortFrom(call.target.Addr(), port))
	if err != nil {
		return u, &httpError{code: http.StatusServiceUnavailable, msg: "no healthy upstream"}
	}
	u.w, u.addr = w, addr
	return u, nil
}

// redirectURL is where rd sends req.
func redirectURL(req *http.Request, rd *routes.Redirect, prefix string) string {
	scheme := "http"
	if rd.Scheme != "" {
		scheme = rd.Scheme
	}
	host := req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if rd.Hostname != "" {
		host = rd.Hostname
	}
	if rd.Port != 0 {
		host = net.JoinHostPort(host, strconv.Itoa(int(rd.Port)))
	}
	path := req.URL.Path
	if rd.Path != nil {
		path = rd.Path.RewritePath(path, prefix)
	}
	out := scheme + "://" + host + path
	if req.URL.RawQuery != "" {
		out += "?" + req.URL.RawQuery
	}
	return out
}

// prepare makes out, a copy of in, what the rule sends on: its host, request header modifiers and rewrite.
func (u *upstream) prepare(out, in *http.Request) {
	out.Host = in.Host
	a := u.action
	if a == nil {
		return
	}
	a.RequestHeaders.Apply(out.Header)
	if rw := a.Rewrite; rw != nil {
		if rw.Hostname != "" {
			out.Host = rw.Hostname
		}
		if rw.Path != nil {
			out.URL.Path, out.URL.RawPath = rw.Path.RewritePath(in.URL.Path, u.prefix), ""
		}
	}
}

type upstreamKey struct{}

// upstreamDial is what the transport's dialer needs to open a tunnel to the chosen endpoint. The tunnel carries
// no `forwarded` client: it is kept for the requests of every client, as Envoy's upstream connections are.
type upstreamDial struct {
	w *state.Workload
}

// forward sends req to the upstream u and copies the answer back, streaming both bodies.
func (s *l7Server) forward(w http.ResponseWriter, req *http.Request, snap *state.Snapshot, call waypointCall, u *upstream) {
	wpID, err := call.wt.wp.Identity()
	if err != nil {
		http.Error(w, "waypoint identity: "+err.Error(), http.StatusInternalServerError)
		return
	}
	ctx := req.Context()
	if u.action != nil && u.action.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, u.action.Timeout)
		defer cancel()
	}
	rp := &httputil.ReverseProxy{
		// As Istio: HTTP/2 (with prior knowledge) to a port declared http2 or grpc, HTTP/1.1 to an http one;
		// retried as Istio's default retry policy says (retrier).
		Transport: &retrier{s: s, snap: snap, call: call, u: u, wpID: wpID, h2: upstreamH2(u.svc, u.port)},
		// FlushInterval 0: a body of unknown length (gRPC, server-sent events) is still flushed as it comes.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http" // the retrier sets the endpoint
			u.prepare(pr.Out, req)
		},
		ModifyResponse: func(resp *http.Response) error {
			if a := u.action; a != nil {
				a.ResponseHeaders.Apply(resp.Header)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			code := http.StatusServiceUnavailable
			if errors.Is(err, context.DeadlineExceeded) {
				code = http.StatusGatewayTimeout
			}
			http.Error(w, "upstream connect error or disconnect/reset before headers", code)
		},
		ErrorLog: nil,
	}
	rp.ServeHTTP(w, req.WithContext(ctx))
}

// retryAttempts is Istio's default: two retries.
const retryAttempts = 2

// retrier sends a request to the picked endpoint and retries as Istio's default retry policy does: up to
// retryAttempts more times, each on another endpoint of the service, when the request could not be sent (its
// tunnel could not be opened: the endpoint's agent refused it, the connection failed) while nothing has read its
// body, or was answered 503 and has no body: the waypoint does not buffer bodies to send them again. u follows
// the endpoint that answered, for the record.
type retrier struct {
	s    *l7Server
	snap *state.Snapshot
	call waypointCall
	u    *upstream
	wpID spiffeid.ID
	h2   bool
}

func (rt *retrier) RoundTrip(req *http.Request) (*http.Response, error) {
	body := &replayBody{ReadCloser: req.Body}
	if req.Body == nil || req.Body == http.NoBody {
		body = nil
	}
	tried := map[string]bool{}
	for attempt := 0; ; attempt++ {
		tried[rt.u.w.UID] = true
		out := req.WithContext(context.WithValue(req.Context(), upstreamKey{}, upstreamDial{w: rt.u.w}))
		u := *req.URL
		u.Host = rt.u.addr.String()
		out.URL = &u
		if body != nil {
			out.Body = body
		}
		expected, err := rt.u.w.Identity()
		if err != nil {
			return nil, err
		}
		resp, err := rt.s.transport(identityPair{rt.wpID, expected}, rt.h2).RoundTrip(out)
		// Retried: a request whose connection could not be opened (nothing of it was sent) while none of its body
		// was read, and a request without a body answered 503. Never one that may have reached an endpoint.
		var de *dialError
		retry := attempt < retryAttempts && req.Context().Err() == nil &&
			(err != nil && errors.As(err, &de) && (body == nil || !body.read.Load()) ||
				err == nil && body == nil && resp.StatusCode == http.StatusServiceUnavailable)
		if !retry {
			return resp, err
		}
		w, addr, perr := rt.s.h.pickEndpoint(rt.snap, waypointTarget{wp: rt.call.wt.wp, svc: without(rt.u.svc, tried)},
			netip.AddrPortFrom(rt.call.target.Addr(), rt.u.port))
		if perr != nil { // no other endpoint: the answer stands
			return resp, err
		}
		if resp != nil {
			resp.Body.Close()
		}
		rt.u.w, rt.u.addr = w, addr
	}
}

// dialError is a connection to an endpoint that could not be opened: nothing of the request was sent.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// without is svc with only the endpoints whose workload is not in uids.
func without(svc *state.Service, uids map[string]bool) *state.Service {
	part := *svc
	part.Endpoints = make([]*state.Endpoint, 0, len(svc.Endpoints))
	for _, e := range svc.Endpoints {
		if !uids[e.Workload.UID] {
			part.Endpoints = append(part.Endpoints, e)
		}
	}
	return &part
}

// replayBody is a request body a retry may send again while nothing has read it: the transport closes the body
// it was given even when it sent nothing, so Close does nothing (the server closes the request's own body when
// the request ends). A read counts from its start, even one still blocked.
type replayBody struct {
	io.ReadCloser
	read atomic.Bool
}

func (b *replayBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.ReadCloser.Read(p)
}

func (b *replayBody) Close() error { return nil }

// transport is the client of the waypoint identity to endpoints of the endpoint identity of ids, for HTTP/1.1 (h2
// false) or HTTP/2 with prior knowledge.
func (s *l7Server) transport(ids identityPair, h2 bool) *http.Transport {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.transports[ids]
	if t == nil {
		dial := func(ctx context.Context, _, addr string) (net.Conn, error) { return s.dial(ctx, ids, addr) }
		h1 := &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
			ResponseHeaderTimeout: 0, ForceAttemptHTTP2: false}
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		h2t := &http.Transport{DialContext: dial, Protocols: &p, IdleConnTimeout: 90 * time.Second}
		t = &l7Transports{h1: h1, h2: h2t}
		s.transports[ids] = t
	}
	if h2 {
		return t.h2
	}
	return t.h1
}

// dial opens an HBONE tunnel, as the waypoint identity of ids, to the endpoint the request's context names at
// addr, which must present the endpoint identity of ids.
func (s *l7Server) dial(ctx context.Context, ids identityPair, addr string) (net.Conn, error) {
	ud, _ := ctx.Value(upstreamKey{}).(upstreamDial)
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ud.w == nil {
		return nil, fmt.Errorf("waypoint: no endpoint chosen for %s", addr)
	}
	if id, err := ud.w.Identity(); err != nil || id != ids.endpoint {
		return nil, fmt.Errorf("waypoint: endpoint %s is not %s", ud.w.UID, ids.endpoint)
	}
	id, expected := ids.waypoint, ids.endpoint
	ctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	c, err := s.h.d.Tunnels.DialTunnel(ctx, hbone.Tunnel{Source: id, Expected: []spiffeid.ID{expected},
		Gateway: netip.AddrPortFrom(ap.Addr(), HBONEPort), Authority: addr, ServerName: ud.w.ServerName()})
	if err != nil {
		return nil, &dialError{err}
	}
	return c, nil
}

// report records one request: Istio's request metrics (reporter waypoint) and an access log line.
func (s *l7Server) report(snap *state.Snapshot, c *l7Conn, req *http.Request, rw *statusRecorder, u upstream, herr *httpError, audit string, d time.Duration) {
	peer := ""
	if !c.call.peer.IsZero() {
		peer = c.call.peer.String()
	}
	var srcW *state.Workload
	if w, ok := snap.WorkloadByAddr(c.call.caller.Addr()); ok && principal(w) == peer {
		srcW = w
	}
	labels := connLabels(telemetry.ReporterWaypoint, srcW, peer, u.w, "", true)
	withService(&labels, u.svc)
	protocol, grpcStatus := "http", ""
	if strings.HasPrefix(req.Header.Get("Content-Type"), "application/grpc") {
		protocol = "grpc"
		grpcStatus = grpcCode(rw.Header().Get("Grpc-Status"), rw.Header().Get(http.TrailerPrefix+"Grpc-Status"))
	}
	code := rw.code
	if code == 0 {
		code = http.StatusOK
	}
	flag := telemetry.FlagNone
	switch {
	case herr != nil && herr.denied:
		flag = telemetry.FlagDeny
	case code >= 500 && u.w == nil:
		flag = telemetry.FlagNoRoute
	}
	s.h.d.Metrics.Request(&labels, telemetry.Request{Protocol: protocol, Code: code, GRPCStatus: grpcStatus, Flag: flag, Duration: d,
		RequestBytes: max(req.ContentLength, 0), ResponseBytes: rw.bytes})
	dst := "-"
	if u.addr.IsValid() {
		dst = u.addr.String()
	}
	route := "-"
	if u.action != nil {
		route = u.action.Route
	}
	if audit == "" {
		audit = "-"
	}
	s.h.d.Access.Info("access", "direction", "waypoint", "route", "waypoint_http", "method", req.Method,
		"path", req.URL.Path, "protocol", req.Proto, "response_code", code, "src", c.call.caller, "src_identity", peer,
		"dst", dst, "dst_service", u.svc.Hostname, "http_route", route, "duration", d, "bytes_sent", rw.bytes, "audit", audit)
}

// statusRecorder notes the status and body size of a response; Unwrap keeps the writer's Flush and Hijack
// (websockets) reachable through http.ResponseController.
type statusRecorder struct {
	http.ResponseWriter
	code  int
	bytes int64
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Hijack takes the connection over for an upgrade (a websocket): the reverse proxy writes the upstream's 101
// itself.
func (r *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil && r.code == 0 {
		r.code = http.StatusSwitchingProtocols
	}
	return c, brw, err
}

// connQueue is a net.Listener of the connections pushed to it.
type connQueue struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue() *connQueue { return &connQueue{ch: make(chan net.Conn), done: make(chan struct{})} }

func (q *connQueue) push(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		_ = c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return &net.TCPAddr{} }

// grpcCode is the gRPC status of a response (its trailer, or a trailers-only header) when it is one of gRPC's
// codes (0 to 16), else "": an upstream's word never makes a label value of its own.
func grpcCode(values ...string) string {
	for _, v := range values {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 16 {
			return v
		}
	}
	return ""
}
