package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Hooks connect the admin endpoints to the running agent.
type Hooks struct {
	// ConfigDump returns the value served as /config_dump (marshalled as JSON).
	// It must never contain private keys or other secrets.
	ConfigDump func() any
	// Level and SetLevel read and change the log level at run time.
	Level    func() slog.Level
	SetLevel func(slog.Level)
	// ParseLevel turns a level name into a level, or says what is wrong.
	ParseLevel func(string) (slog.Level, error)
	// Quit asks the agent to shut down gracefully.
	Quit func()
	// Ready reports readiness and, when not ready, what is missing.
	Ready func() (bool, []string)
	// Connections returns the open connections (served as /connections, as JSON).
	Connections func() any
	// Probe checks an HBONE peer: a TLS handshake with a local identity and the HTTP/2 preface, nothing
	// carried (served as POST /probe). A failed probe is a result, not an error; the error is for a request
	// that cannot be made (a bad address, no such local identity).
	Probe func(ctx context.Context, req ProbeRequest) (any, error)
	// Explain says what the agent would do with a connection from a local workload to a destination, and what
	// authorization would decide (served as GET /explain). The error is for a request that cannot be answered.
	Explain func(ctx context.Context, req ExplainRequest) (any, error)
}

// ExplainRequest is what GET /explain asks: ?destination=IP:PORT&from=WORKLOAD.
type ExplainRequest struct {
	Destination string // IP:PORT, as a captured connection's original destination
	From        string // the local workload (name, namespace/name or SPIFFE ID; "": the first)
}

// ProbeRequest is what POST /probe asks: ?address=IP[:PORT]&expect=SPIFFE-ID&as=SPIFFE-ID-OR-WORKLOAD.
type ProbeRequest struct {
	Address string // the peer's HBONE address; port 15008 when none is given
	Expect  string // the identity the peer must present ("": any of the trust bundle's)
	As      string // the local identity to present ("": the first local workload's)
}

// ControlHandler returns the handler of the control API, served only on the
// agent's unix socket (mode 0660): whoever reaches it can read the whole
// configuration, change the log level, profile the agent and stop it.
func ControlHandler(h Hooks, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, h.ConfigDump())
	})
	mux.HandleFunc("/logging", func(w http.ResponseWriter, r *http.Request) {
		serveLogging(w, r, h, log)
	})
	mux.HandleFunc("GET /connections", func(w http.ResponseWriter, r *http.Request) {
		if h.Connections == nil {
			http.Error(w, "not available", http.StatusNotFound)
			return
		}
		writeJSON(w, h.Connections())
	})
	mux.HandleFunc("POST /probe", func(w http.ResponseWriter, r *http.Request) {
		if h.Probe == nil {
			http.Error(w, "not available", http.StatusNotFound)
			return
		}
		q := r.URL.Query()
		res, err := h.Probe(r.Context(), ProbeRequest{Address: q.Get("address"), Expect: q.Get("expect"), As: q.Get("as")})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("GET /explain", func(w http.ResponseWriter, r *http.Request) {
		if h.Explain == nil {
			http.Error(w, "not available", http.StatusNotFound)
			return
		}
		q := r.URL.Query()
		res, err := h.Explain(r.Context(), ExplainRequest{Destination: q.Get("destination"), From: q.Get("from")})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("POST /quitquitquit", func(w http.ResponseWriter, r *http.Request) {
		log.Info("shutdown requested through the control API")
		fmt.Fprintln(w, "OK")
		h.Quit()
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /healthz/ready", readyHandler(h))
	return mux
}

// LocalHandler returns the handler of the admin port on loopback TCP, which any
// local user (and any web page a local browser opens) can reach: read-only,
// nothing secret, and only for requests addressed to a loopback name, so that a
// DNS name rebound to 127.0.0.1 gets nothing.
func LocalHandler(h Hooks, socket string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", readyHandler(h))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ambient-agent: /healthz/ready here; the control API (/config_dump, /logging, /quitquitquit, /debug/pprof/) is on the unix socket %s\n", socket)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not on this port: the control API is on the unix socket "+socket, http.StatusNotFound)
	})
	return loopbackHost(mux)
}

// loopbackHost refuses a request whose Host is not a loopback name or address.
func loopbackHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !IsLoopbackName(host) {
			http.Error(w, "Host must be localhost or a loopback address", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// IsLoopbackName reports whether host (without port; IPv6 with or without
// brackets) names this host's loopback.
func IsLoopbackName(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// MetricsHandler serves the registry at /metrics and at /stats/prometheus,
// where Istio's scrapers look.
func MetricsHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	h := promhttp.HandlerFor(g, promhttp.HandlerOpts{})
	mux.Handle("GET /metrics", h)
	mux.Handle("GET /stats/prometheus", h)
	return mux
}

// ReadinessHandler returns the handler of the readiness port.
func ReadinessHandler(h Hooks) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", readyHandler(h))
	return mux
}

func readyHandler(h Hooks) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ok, missing := h.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", strings.Join(missing, ", "))
			return
		}
		fmt.Fprintln(w, "ready")
	}
}

// serveLogging shows the level (GET) or changes it (POST ?level=debug).
func serveLogging(w http.ResponseWriter, r *http.Request, h Hooks, log *slog.Logger) {
	switch r.Method {
	case http.MethodGet:
		fmt.Fprintf(w, "level: %s\n", strings.ToLower(h.Level().String()))
	case http.MethodPost, http.MethodPut:
		name := r.URL.Query().Get("level")
		lvl, err := h.ParseLevel(name)
		if err != nil {
			http.Error(w, "level: "+err.Error(), http.StatusBadRequest)
			return
		}
		h.SetLevel(lvl)
		log.Info("log level changed through the admin API", "level", lvl.String())
		fmt.Fprintf(w, "level: %s\n", strings.ToLower(lvl.String()))
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "use GET to read or POST ?level= to change", http.StatusMethodNotAllowed)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
