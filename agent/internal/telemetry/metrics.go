package telemetry

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// IstioRelease is the Istio release whose ztunnel the agent matches: istio_build's tag, as ztunnel reports
// the release it ships with (the agent's own version is ambient_agent_build_info's).
const IstioRelease = "1.31.1"

// Metrics are the agent's Prometheus metrics, registered on a caller's registry.
type Metrics struct {
	opened   *prometheus.CounterVec
	closed   *prometheus.CounterVec
	received *prometheus.CounterVec
	sent     *prometheus.CounterVec
	failed   *prometheus.CounterVec
	open     *prometheus.GaugeVec
	live     sync.Map // *Conn -> struct{}: connections whose bytes count as they are carried
	setsMu   sync.RWMutex
	sets     map[ConnLabels]*labelSet
	requests *requestMetrics

	CertExpiry      *prometheus.GaugeVec   // identity, kind -> unix seconds
	GossipMembers   prometheus.Gauge       // alive members seen
	GossipEvents    *prometheus.CounterVec // event: join, leave, update
	PolicyDecisions *prometheus.CounterVec // decision: allow, deny; reporter
	HealthChanges   *prometheus.CounterVec // to: healthy, unhealthy
	// GossipRejected counts peers' records dropped, by reason (unsigned, bad_proof, unproven_claim, ...).
	GossipRejected *prometheus.CounterVec
	// CaptureRepairs counts the capture table put back after another process
	// changed or removed it (nft flush ruleset, a firewall reload, cleanup).
	CaptureRepairs prometheus.Counter
	// Refused counts connections and tunnels closed by a limit ([limits]), by
	// listener, stage (handshake, connection, stream) and limit (per_source, total).
	Refused *prometheus.CounterVec
	// OnDemandDNS counts connect-time resolutions of workloads known by hostname only.
	OnDemandDNS *prometheus.CounterVec
	// Conflicts counts the claims the current state does not use, by kind (address, service, waypoint) and reason.
	Conflicts *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them, with Go and process
// collectors, on reg.
func NewMetrics(reg prometheus.Registerer, version string) *Metrics {
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, connLabelNames)
	}
	m := &Metrics{
		sets:     map[ConnLabels]*labelSet{},
		opened:   counter("istio_tcp_connections_opened_total", "The total number of TCP connections opened."),
		closed:   counter("istio_tcp_connections_closed_total", "The total number of TCP connections closed."),
		received: counter("istio_tcp_received_bytes_total", "The size of total bytes received during request in case of a TCP connection."),
		sent:     counter("istio_tcp_sent_bytes_total", "The size of total bytes sent during response in case of a TCP connection."),
		failed:   counter("istio_tcp_connections_failed_total", "The total number of TCP connections that failed to establish."),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "istio_tcp_sockets_open", Help: "The number of TCP connections open now.",
		}, []string{"reporter"}),
		CertExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ambient_agent_certificate_expiry_seconds", Help: "When a held certificate expires, in Unix seconds.",
		}, []string{"identity", "kind"}),
		GossipMembers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambient_agent_gossip_members", Help: "The number of alive gossip members this node sees, itself included.",
		}),
		GossipEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambient_agent_gossip_events_total", Help: "Gossip events: member_up, member_down, records_changed.",
		}, []string{"event"}),
		PolicyDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambient_agent_policy_decisions_total", Help: "Authorization decisions by outcome.",
		}, []string{"decision"}),
		HealthChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambient_agent_health_changes_total", Help: "Local workload health changes, by the new status.",
		}, []string{"to"}),
	}
	m.GossipRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ambient_agent_gossip_rejected_total", Help: "Peers' gossip records dropped, by reason.",
	}, []string{"reason"})
	m.CaptureRepairs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ambient_agent_capture_repairs_total", Help: "Times the capture table was put back after another process changed or removed it.",
	})
	m.Refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ambient_agent_connections_refused_total", Help: "Connections and tunnels closed because a limit was reached, by listener, stage and limit.",
	}, []string{"listener", "stage", "limit"})
	m.OnDemandDNS = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "istio_on_demand_dns_total", Help: "The total number of requests that used on-demand DNS (unstable).",
	}, []string{"source_workload", "source_canonical_service", "source_canonical_revision", "source_workload_namespace",
		"source_principal", "source_app", "source_version", "source_cluster", "hostname"})
	m.Conflicts = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ambient_agent_discovery_conflicts", Help: "Claims of addresses, services and waypoints the mesh state does not use, by kind and reason.",
	}, []string{"kind", "reason"})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "istio_build", Help: "Istio component build info.",
	}, []string{"component", "tag"})
	build.WithLabelValues("ztunnel", IstioRelease).Set(1)
	own := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ambient_agent_build_info", Help: "The agent's own version.",
	}, []string{"version"})
	own.WithLabelValues(version).Set(1)
	reg.MustRegister(m.opened, m.closed, liveBytes{m}, m.failed, m.open, build, own,
		m.CertExpiry, m.GossipMembers, m.GossipEvents, m.PolicyDecisions, m.HealthChanges,
		m.GossipRejected, m.Conflicts, m.CaptureRepairs, m.Refused, m.OnDemandDNS,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.requests = newRequestMetrics(reg)
	return m
}

// liveBytes collects the byte counters after counting what live connections
// carried since the last scrape: a long transfer shows at every scrape.
type liveBytes struct{ m *Metrics }

func (l liveBytes) Describe(ch chan<- *prometheus.Desc) {
	l.m.received.Describe(ch)
	l.m.sent.Describe(ch)
}

func (l liveBytes) Collect(ch chan<- prometheus.Metric) {
	l.m.live.Range(func(k, _ any) bool {
		k.(*Conn).flush()
		return true
	})
	l.m.received.Collect(ch)
	l.m.sent.Collect(ch)
}

// ResolvedOnDemand counts one connect-time resolution of hostname for a
// connection with the source labels of l.
func (m *Metrics) ResolvedOnDemand(l *ConnLabels, hostname string) {
	v := []string{l.SourceWorkload, l.SourceCanonicalService, l.SourceCanonicalRevision, l.SourceWorkloadNamespace,
		l.SourcePrincipal, l.SourceApp, l.SourceVersion, l.SourceCluster, hostname}
	for i, s := range v {
		if s == "" {
			v[i] = Unknown
		}
	}
	m.OnDemandDNS.WithLabelValues(v...).Inc()
}
