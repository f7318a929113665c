package config

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/ports"
)

// builder accumulates problems while a File is turned into a Config.
type builder struct{ problems Problems }

func (b *builder) addf(key, format string, args ...any) {
	b.problems = append(b.problems, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// Build resolves defaults and validates f. Problems carry key paths but no file
// or line; Parse fills those in.
func Build(f File) (*Config, Problems) {
	b := &builder{}
	cfg := &Config{
		Node:     b.node(f.Node),
		Identity: b.identity(f.Identity),
		Gossip:   b.gossip(f.Gossip),
		Capture:  b.capture(f.Capture),
		Policy:   b.policy(f.Policy),
		Admin:    b.admin(f.Admin),
		Limits:   b.limits(f.Limits),
		Log:      b.log(f.Log),
	}
	owners := map[netip.Addr]string{}
	cfg.Workloads = b.workloads("workload", f.Workload, owners)
	b.checkSharing(cfg.Workloads)
	b.unmatched(&cfg.Capture, f.Capture, cfg.Workloads)
	b.unmeshedWorkloads(cfg.Capture, cfg.Workloads)
	cfg.Remotes = b.remotes(f.Remote, owners)
	cfg.Waypoint = b.waypoint(f.Waypoint, cfg.Node, owners)
	cfg.Gateway = b.gateway(f.Gateway, cfg.Node, owners)
	cfg.Services = b.services(f.Service, cfg.Workloads, owners)
	cfg.DNS = b.dns(f.DNS)
	cfg.Istio = b.istio(f.Istio, cfg.Identity, len(cfg.Workloads) > 0 || cfg.Waypoint.Enabled)
	for i, w := range cfg.Workloads {
		if w.AutoRegister != "" && !cfg.Istio.Enabled {
			b.addf(fmt.Sprintf("workload[%d].auto_register", i), "needs [istio] enabled: istiod registers the workload")
		}
	}
	cfg.Policy.WaypointEnforcement, cfg.Policy.Hairpin = b.enforcement(f.Policy, cfg)
	b.publishable(cfg)
	if len(b.problems) > 0 {
		return nil, b.problems
	}
	return cfg, nil
}

// IsLabelValue reports whether s is a valid Kubernetes label value, which is
// what Istio takes as a cluster id (topology.istio.io/cluster) and as a
// locality's parts.
func IsLabelValue(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return alnum(s[0]) && alnum(s[len(s)-1])
}

func (b *builder) node(f NodeFile) Node {
	n := Node{
		Name:         f.Name,
		TrustDomain:  orDefault(f.TrustDomain, DefaultTrustDomain),
		Network:      f.Network,
		ClusterID:    f.ClusterID,
		Locality:     f.Locality,
		DrainTimeout: b.duration("node.drain_timeout", f.DrainTimeout, DefaultDrainTimeout),
		HandoffDrain: b.duration("node.handoff_drain_timeout", f.HandoffDrain, DefaultHandoffDrain),
	}
	if n.Name == "" {
		host, err := os.Hostname()
		if err != nil {
			b.addf("node.name", "not set and the hostname is unknown (%v); set it", err)
		}
		n.Name = strings.ToLower(strings.SplitN(host, ".", 2)[0])
		if err == nil && !IsDNSLabel(n.Name) {
			b.addf("node.name", "not set and the hostname %q is not a DNS label; set it", host)
		}
	} else if !IsDNSLabel(n.Name) {
		b.addf("node.name", "%q is not a DNS label (lowercase letters, digits and '-', at most 63)", n.Name)
	}
	if n.Name == ReservedNodeName {
		b.addf("node.name", "%q is reserved for what istiod declares; name this host otherwise", n.Name)
	}
	if _, err := spiffeid.TrustDomainFromString(n.TrustDomain); err != nil || strings.Contains(n.TrustDomain, "/") {
		b.addf("node.trust_domain", "%q is not a valid SPIFFE trust domain (lowercase letters, digits, '.', '-', '_')", n.TrustDomain)
	}
	if n.Network != "" && !IsDNSSubdomain(n.Network) {
		b.addf("node.network", "%q is not a DNS name", n.Network)
	}
	if parts := strings.Split(n.Locality, "/"); n.Locality != "" && (len(parts) > 3 || slices.ContainsFunc(parts, func(p string) bool { return p != "" && !IsLabelValue(p) })) {
		b.addf("node.locality", "%q is not a locality: \"region\", \"region/zone\" or \"region/zone/subzone\", each a Kubernetes label value", n.Locality)
	}
	if n.ClusterID != "" && !IsLabelValue(n.ClusterID) {
		b.addf("node.cluster_id", "%q is not a cluster id (a Kubernetes label value: up to 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit; Istio's default is \"Kubernetes\")", n.ClusterID)
	}
	if n.DrainTimeout <= 0 || n.DrainTimeout > 10*time.Minute {
		b.addf("node.drain_timeout", "%s is out of range (0s, 10m]", n.DrainTimeout)
	}
	if n.HandoffDrain <= 0 || n.HandoffDrain > 7*24*time.Hour {
		b.addf("node.handoff_drain_timeout", "%s is out of range (0s, 168h]", n.HandoffDrain)
	}
	return n
}

func (b *builder) identity(f IdentityFile) Identity {
	id := Identity{
		Source:      orDefault(f.Source, DefaultIdentitySource),
		Dir:         orDefault(f.Dir, DefaultIdentityDir),
		SpireSocket: orDefault(f.SpireSocket, DefaultSpireSocket),
	}
	switch id.Source {
	case SourceFiles, SourceSpire, SourceIstio:
	default:
		b.addf("identity.source", "%q is not one of %q, %q, %q", id.Source, SourceFiles, SourceSpire, SourceIstio)
	}
	if !strings.HasPrefix(id.Dir, "/") {
		b.addf("identity.dir", "%q is not an absolute path", id.Dir)
	}
	if !strings.HasPrefix(id.SpireSocket, "/") {
		b.addf("identity.spire_socket", "%q is not an absolute path", id.SpireSocket)
	}
	return id
}

// workloads validates a list of workloads under table; owners records which
// entry holds each address, across lists, so that no address has two owners.
func (b *builder) workloads(table string, fs []WorkloadFile, owners map[netip.Addr]string) []Workload {
	out := make([]Workload, 0, len(fs))
	names := map[string]string{}
	for i, f := range fs {
		key := fmt.Sprintf("%s[%d]", table, i)
		w := Workload{
			Name:           f.Name,
			Namespace:      orDefault(f.Namespace, DefaultNamespace),
			ServiceAccount: orDefault(f.ServiceAccount, DefaultServiceAccount),
			Labels:         f.Labels,
			UseWaypoint:    f.UseWaypoint,
			Capacity:       b.capacity(key+".capacity", f.Capacity),
			Health:         b.health(key+".health", f.Health),
			Ports:          b.workloadPorts(key+".ports", f.Ports),
			Processes:      b.processMatch(key, f),
		}
		b.useWaypoint(key+".use_waypoint", f.UseWaypoint)
		if f.AutoRegister != "" {
			w.AutoRegister = f.AutoRegister
			switch {
			case table != "workload":
				b.addf(key+".auto_register", "is for a local [[workload]]: istiod registers the workloads of the host that connects")
			case !IsDNSSubdomain(f.AutoRegister):
				b.addf(key+".auto_register", "%q is not a WorkloadGroup name (a DNS name)", f.AutoRegister)
			}
		}
		b.workloadNames(key, w, names)
		w.Addresses = b.workloadAddrs(table, key, f.Addresses, owners)
		for k := range f.Labels {
			if k == "" || len(k) > 317 {
				b.addf(key+".labels", "label key %q is empty or too long", k)
			}
		}
		out = append(out, w)
	}
	return out
}

// nameAndNamespace checks the name (required) and namespace of the object at key: DNS labels both.
func (b *builder) nameAndNamespace(key, name, namespace string) {
	switch {
	case name == "":
		b.addf(key+".name", "is required")
	case !IsDNSLabel(name):
		b.addf(key+".name", "%q is not a DNS label", name)
	}
	if !IsDNSLabel(namespace) {
		b.addf(key+".namespace", "%q is not a DNS label", namespace)
	}
}

// workloadNames checks a workload's name, namespace and service account, and
// that no other workload of the table has its name in its namespace (names:
// namespace/name -> the key that declared it).
func (b *builder) workloadNames(key string, w Workload, names map[string]string) {
	b.nameAndNamespace(key, w.Name, w.Namespace)
	if !IsDNSSubdomain(w.ServiceAccount) {
		b.addf(key+".service_account", "%q is not a DNS name", w.ServiceAccount)
	}
	qualified := w.Namespace + "/" + w.Name
	if prev, dup := names[qualified]; dup && w.Name != "" {
		b.addf(key+".name", "%q in namespace %q is already declared by %s", w.Name, w.Namespace, prev)
	}
	names[qualified] = key
}

// workloadAddrs parses a workload's addresses. An address belongs to one
// workload (owners: address -> the key that claimed it first), but for local
// workloads that share one, each serving its own ports.
func (b *builder) workloadAddrs(table, key string, addrs []string, owners map[netip.Addr]string) []netip.Addr {
	if len(addrs) == 0 {
		b.addf(key+".addresses", "at least one address is required")
	}
	var out []netip.Addr
	for j, s := range addrs {
		akey := fmt.Sprintf("%s.addresses[%d]", key, j)
		a, ok := b.workloadAddr(akey, s)
		if !ok {
			continue
		}
		if prev, dup := owners[a]; dup && !(table == "workload" && strings.HasPrefix(prev, "workload[")) {
			b.addf(akey, "%s is already used by %s", a, prev)
			continue
		}
		if _, dup := owners[a]; !dup {
			owners[a] = key
		}
		out = append(out, a)
	}
	return out
}

func (b *builder) workloadAddr(key, s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		b.addf(key, "%q is not an IP address", s)
		return a, false
	}
	if a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() {
		b.addf(key, "%s cannot be a workload address (unspecified, loopback, multicast or zoned)", a)
		return a, false
	}
	return a.Unmap(), true
}

func (b *builder) policy(f PolicyFile) Policy {
	p := Policy{Dir: orDefault(f.Dir, DefaultPolicyDir), RootNamespace: orDefault(f.RootNamespace, DefaultRootNamespace)}
	if !strings.HasPrefix(p.Dir, "/") {
		b.addf("policy.dir", "%q is not an absolute path", p.Dir)
	}
	if !IsDNSLabel(p.RootNamespace) {
		b.addf("policy.root_namespace", "%q is not a DNS label", p.RootNamespace)
	}
	return p
}

func (b *builder) admin(f AdminFile) Admin {
	a := Admin{
		Socket:           orDefault(f.Socket, DefaultControlSocket),
		Address:          b.addrPort("admin.address", orDefault(f.Address, DefaultAdminAddress)),
		ReadinessAddress: b.addrPort("admin.readiness_address", orDefault(f.ReadinessAddress, DefaultReadinessAddress)),
		MetricsAddress:   b.addrPort("admin.metrics_address", orDefault(f.MetricsAddress, DefaultMetricsAddress)),
	}
	// The kernel's limit on a unix socket's path (sun_path) is 108 bytes with its NUL, and the handoff socket
	// beside it (HandoffSocket) adds 8.
	if !filepath.IsAbs(a.Socket) || filepath.Clean(a.Socket) != a.Socket || len(a.HandoffSocket()) > 107 {
		b.addf("admin.socket", "%q is not a clean absolute path of at most 99 bytes", a.Socket)
	}
	// Even read-only, the admin port is for this host's operators: loopback only.
	if a.Address.IsValid() && !a.Address.Addr().IsLoopback() {
		b.addf("admin.address", "%s is not a loopback address; the admin API must not be reachable from the network", a.Address)
	}
	if a.Address.IsValid() && a.Address == a.ReadinessAddress {
		b.addf("admin.readiness_address", "%s is also admin.address", a.ReadinessAddress)
	}
	for key, ap := range map[string]netip.AddrPort{"admin.address": a.Address, "admin.readiness_address": a.ReadinessAddress, "admin.metrics_address": a.MetricsAddress} {
		switch ap.Port() {
		case ports.Outbound, ports.InboundPlaintext, ports.HBONE, ports.DNS:
			b.addf(key, "port %d is one of the agent's data-path ports (15001, 15006, 15008, 15053)", ap.Port())
		}
	}
	if a.MetricsAddress.IsValid() && (a.MetricsAddress == a.Address || a.MetricsAddress == a.ReadinessAddress) {
		b.addf("admin.metrics_address", "%s is also used by another admin endpoint", a.MetricsAddress)
	}
	return a
}

func (b *builder) log(f LogFile) Log {
	l := Log{Format: orDefault(f.Format, FormatText), Access: f.Access == nil || *f.Access}
	if err := l.Level.UnmarshalText([]byte(orDefault(f.Level, "info"))); err != nil {
		b.addf("log.level", "%q is not one of debug, info, warn, error", f.Level)
	}
	if l.Format != FormatText && l.Format != FormatJSON {
		b.addf("log.format", "%q is not one of %q, %q", l.Format, FormatText, FormatJSON)
	}
	return l
}

// ParseLevel parses a log level name as used in [log] level and by the admin API.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
	}
	return l, nil
}

func (b *builder) duration(key, s string, def time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		b.addf(key, "%q is not a duration (e.g. \"5s\", \"1m30s\")", s)
		return def
	}
	return d
}

func (b *builder) addrPort(key, s string) netip.AddrPort {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		b.addf(key, "%q is not an ip:port address", s)
		return ap
	}
	if ap.Port() == 0 {
		b.addf(key, "port 0 is not allowed")
	}
	return ap
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (b *builder) remotes(fs []RemoteFile, owners map[netip.Addr]string) []Remote {
	plain := make([]WorkloadFile, len(fs))
	for i, f := range fs {
		plain[i] = f.WorkloadFile
	}
	ws := b.workloads("remote_workload", plain, owners)
	out := make([]Remote, len(fs))
	for i, f := range fs {
		key := fmt.Sprintf("remote_workload[%d]", i)
		out[i] = Remote{Workload: ws[i], Node: f.Node, Tunnel: orDefault(f.Tunnel, TunnelHBONE)}
		if f.Node != "" && !IsDNSLabel(f.Node) {
			b.addf(key+".node", "%q is not a DNS label", f.Node)
		}
		if f.Health != nil {
			b.addf(key+".health", "health checks run on the workload's own host; declare it there")
		}
		if f.User != "" || f.Group != "" || f.Unit != "" {
			b.addf(key, "user, group and unit recognise processes of this host; a remote workload has none here")
		}
		if t := out[i].Tunnel; t != TunnelHBONE && t != TunnelNone {
			b.addf(key+".tunnel", "%q is not one of %q, %q", t, TunnelHBONE, TunnelNone)
		}
	}
	return out
}
