package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

func (b *builder) capacity(key string, c *int64) uint32 {
	if c == nil {
		return 1
	}
	if *c < 1 || *c > MaxCapacity {
		b.addf(key, "%d is out of range [1, %d]", *c, MaxCapacity)
		return 1
	}
	return uint32(*c)
}

// useWaypoint checks a use_waypoint value: "", "none", "name" or "namespace/name".
func (b *builder) useWaypoint(key, s string) {
	if s == "" || s == UseWaypointNone {
		return
	}
	ns, name, qualified := strings.Cut(s, "/")
	if !qualified {
		ns, name = DefaultNamespace, s
	}
	if !IsDNSLabel(ns) || !IsDNSLabel(name) {
		b.addf(key, "%q is not \"none\", a waypoint name or \"namespace/name\"", s)
	}
}

func (b *builder) health(key string, f *HealthFile) *HealthCheck {
	if f == nil {
		return nil
	}
	h := &HealthCheck{
		Kind:               f.Kind,
		Path:               f.Path,
		Interval:           b.duration(key+".interval", f.Interval, DefaultHealthInterval),
		Timeout:            b.duration(key+".timeout", f.Timeout, DefaultHealthTimeout),
		UnhealthyThreshold: int(f.UnhealthyThreshold),
		HealthyThreshold:   int(f.HealthyThreshold),
	}
	switch h.Kind {
	case HealthTCP:
		if h.Path != "" {
			b.addf(key+".path", "only an \"http\" check has a path")
		}
	case HealthHTTP:
		if h.Path == "" {
			h.Path = "/"
		}
		if !strings.HasPrefix(h.Path, "/") {
			b.addf(key+".path", "%q does not start with \"/\"", h.Path)
		}
	default:
		b.addf(key+".kind", "%q is not one of %q, %q", h.Kind, HealthTCP, HealthHTTP)
	}
	if f.Port < 1 || f.Port > 65535 {
		b.addf(key+".port", "%d is not a port (1-65535)", f.Port)
	}
	h.Port = uint16(f.Port)
	if h.Interval < 100*time.Millisecond || h.Interval > time.Hour {
		b.addf(key+".interval", "%s is out of range [100ms, 1h]", h.Interval)
	}
	if h.Timeout <= 0 || h.Timeout > h.Interval {
		b.addf(key+".timeout", "%s must be positive and at most the interval (%s)", h.Timeout, h.Interval)
	}
	h.UnhealthyThreshold = b.threshold(key+".unhealthy_threshold", f.UnhealthyThreshold, DefaultUnhealthyThreshold)
	h.HealthyThreshold = b.threshold(key+".healthy_threshold", f.HealthyThreshold, DefaultHealthyThreshold)
	return h
}

func (b *builder) threshold(key string, v int64, def int) int {
	if v == 0 {
		return def
	}
	if v < 1 || v > 100 {
		b.addf(key, "%d is out of range [1, 100]", v)
		return def
	}
	return int(v)
}

func (b *builder) services(fs []ServiceFile, local []Workload, owners map[netip.Addr]string) []Service {
	out := make([]Service, 0, len(fs))
	names := map[string]string{}
	hosts := map[string]string{}
	for i, f := range fs {
		key := fmt.Sprintf("service[%d]", i)
		s := Service{
			Name:            f.Name,
			Namespace:       orDefault(f.Namespace, DefaultNamespace),
			Hostname:        strings.ToLower(strings.TrimSuffix(f.Hostname, ".")),
			Workloads:       f.Workloads,
			UseWaypoint:     f.UseWaypoint,
			ServiceAccounts: f.ServiceAccounts,
		}
		for j, sa := range f.ServiceAccounts {
			if !IsDNSSubdomain(sa) {
				b.addf(fmt.Sprintf("%s.service_accounts[%d]", key, j), "%q is not a DNS name", sa)
			}
		}
		b.nameAndNamespace(key, s.Name, s.Namespace)
		if s.Hostname == "" {
			s.Hostname = s.Name + "." + s.Namespace + ".svc." + DefaultClusterDomain
		}
		if !IsDNSSubdomain(s.Hostname) {
			b.addf(key+".hostname", "%q is not a DNS name", f.Hostname)
		}
		if prev, dup := names[s.Namespace+"/"+s.Name]; dup {
			b.addf(key+".name", "%q in namespace %q is already declared by %s", s.Name, s.Namespace, prev)
		}
		names[s.Namespace+"/"+s.Name] = key
		if prev, dup := hosts[s.Hostname]; dup {
			b.addf(key+".hostname", "%q is already the hostname of %s", s.Hostname, prev)
		}
		hosts[s.Hostname] = key
		b.useWaypoint(key+".use_waypoint", f.UseWaypoint)
		s.VIPs = b.vips(key, f.VIPs, owners)
		s.Ports = b.servicePorts(key, f.Ports)
		b.serviceWorkloads(key, s, local)
		out = append(out, s)
	}
	return out
}

func (b *builder) vips(key string, in []string, owners map[netip.Addr]string) []netip.Addr {
	var out []netip.Addr
	for j, v := range in {
		vkey := fmt.Sprintf("%s.vips[%d]", key, j)
		a, ok := b.workloadAddr(vkey, v)
		if !ok {
			continue
		}
		if prev, dup := owners[a]; dup {
			b.addf(vkey, "%s is already used by %s", a, prev)
			continue
		}
		owners[a] = key
		out = append(out, a)
	}
	return out
}

func (b *builder) servicePorts(key string, in []ServicePortFile) []ServicePort {
	if len(in) == 0 {
		b.addf(key+".ports", "at least one port is required, e.g. ports = [{ port = 80, target_port = 8080 }]")
	}
	out := make([]ServicePort, 0, len(in))
	seen := map[uint16]bool{}
	for j, p := range in {
		pkey := fmt.Sprintf("%s.ports[%d]", key, j)
		if p.Port < 1 || p.Port > 65535 {
			b.addf(pkey+".port", "%d is not a port (1-65535)", p.Port)
			continue
		}
		target := p.TargetPort
		if target == 0 {
			target = p.Port
		}
		if target < 1 || target > 65535 {
			b.addf(pkey+".target_port", "%d is not a port (1-65535)", p.TargetPort)
			continue
		}
		if seen[uint16(p.Port)] {
			b.addf(pkey+".port", "port %d is listed twice", p.Port)
			continue
		}
		seen[uint16(p.Port)] = true
		out = append(out, ServicePort{Port: uint16(p.Port), TargetPort: uint16(target), AppProtocol: p.AppProtocol})
	}
	return out
}

// serviceWorkloads checks that a service names local workloads of its
// namespace, each once (an endpoint listed twice would get twice its share of
// the traffic), and that every target port reaches the workload (reachesPort).
func (b *builder) serviceWorkloads(key string, s Service, local []Workload) {
	for j, name := range s.Workloads {
		wkey := fmt.Sprintf("%s.workloads[%d]", key, j)
		if slices.Contains(s.Workloads[:j], name) {
			b.addf(wkey, "workload %q is listed twice", name)
			continue
		}
		i := slices.IndexFunc(local, func(w Workload) bool { return w.Name == name && w.Namespace == s.Namespace })
		if i < 0 {
			b.addf(wkey, "no [[workload]] named %q in namespace %q", name, s.Namespace)
			continue
		}
		w := local[i]
		for _, p := range s.Ports {
			if !reachesPort(w, p.TargetPort, local) {
				b.addf(wkey, "workload %q lists ports %v but not %d, the target port of service port %d; add it to workload[%d].ports or change the target_port",
					name, w.Ports, p.TargetPort, p.Port, i)
			}
		}
	}
}

// reachesPort reports whether a connection to port p on w's addresses reaches
// w, as state.Snapshot.WorkloadFor decides: the workload that lists p on the
// address, else the address's primary (its first workload in the file). A
// workload that lists no ports, or is alone on its addresses, gets them all.
func reachesPort(w Workload, p uint16, local []Workload) bool {
	if len(w.Ports) == 0 || slices.Contains(w.Ports, p) {
		return true
	}
	wi := slices.IndexFunc(local, func(o Workload) bool { return o.Name == w.Name && o.Namespace == w.Namespace })
	for _, a := range w.Addresses {
		for k, o := range local {
			if k == wi || !slices.Contains(o.Addresses, a) {
				continue
			}
			if k < wi || slices.Contains(o.Ports, p) {
				return false // the address's primary is o, or o lists p
			}
		}
	}
	return true
}

func (b *builder) waypoint(f WaypointFile, node Node, owners map[netip.Addr]string) Waypoint {
	if f.Enabled == nil || !*f.Enabled {
		if len(f.Addresses) > 0 || f.Name != "" {
			b.addf("waypoint.enabled", "the [waypoint] table is set but not enabled; add enabled = true or remove it")
		}
		return Waypoint{}
	}
	w := Waypoint{
		Enabled:           true,
		Name:              orDefault(f.Name, DefaultWaypointName),
		Namespace:         orDefault(f.Namespace, DefaultNamespace),
		ServiceAccount:    orDefault(f.ServiceAccount, DefaultWaypointSA),
		ForServiceAccount: f.ForServiceAccount,
	}
	if !IsDNSLabel(w.Name) {
		b.addf("waypoint.name", "%q is not a DNS label", w.Name)
	}
	if !IsDNSLabel(w.Namespace) {
		b.addf("waypoint.namespace", "%q is not a DNS label", w.Namespace)
	}
	if !IsDNSSubdomain(w.ServiceAccount) {
		b.addf("waypoint.service_account", "%q is not a DNS name", w.ServiceAccount)
	}
	if w.ForServiceAccount != "" && !IsDNSSubdomain(w.ForServiceAccount) {
		b.addf("waypoint.for_service_account", "%q is not a DNS name", w.ForServiceAccount)
	}
	w.Addresses = b.roleAddrs("waypoint", "peers send HBONE there", f.Addresses, owners)
	return w
}

// roleAddrs are the addresses of a role of this host (the waypoint, the gateway): at least one, valid, and used
// by nothing else; why says who reaches the role there.
func (b *builder) roleAddrs(role, why string, addrs []string, owners map[netip.Addr]string) []netip.Addr {
	if len(addrs) == 0 {
		b.addf(role+".addresses", "at least one address of this host is required: %s", why)
	}
	var out []netip.Addr
	for j, s := range addrs {
		akey := fmt.Sprintf("%s.addresses[%d]", role, j)
		a, ok := b.workloadAddr(akey, s)
		if !ok {
			continue
		}
		if prev, dup := owners[a]; dup {
			b.addf(akey, "%s is already used by %s; a %s needs an address of its own", a, prev, role)
			continue
		}
		owners[a] = role
		out = append(out, a)
	}
	return out
}

func (b *builder) gateway(f GatewayFile, node Node, owners map[netip.Addr]string) Gateway {
	if f.Enabled == nil || !*f.Enabled {
		if len(f.Addresses) > 0 || f.Network != "" {
			b.addf("gateway.enabled", "the [gateway] table is set but not enabled; add enabled = true or remove it")
		}
		return Gateway{}
	}
	g := Gateway{
		Enabled:        true,
		Namespace:      orDefault(f.Namespace, DefaultGatewayNamespace),
		ServiceAccount: orDefault(f.ServiceAccount, DefaultGatewaySA),
		Network:        orDefault(f.Network, node.Network),
	}
	if !IsDNSLabel(g.Namespace) {
		b.addf("gateway.namespace", "%q is not a DNS label", g.Namespace)
	}
	if !IsDNSSubdomain(g.ServiceAccount) {
		b.addf("gateway.service_account", "%q is not a DNS name", g.ServiceAccount)
	}
	switch {
	case g.Network == "":
		b.addf("gateway.network", "a gateway serves a network: set network here or node.network")
	case node.Network != "" && g.Network != node.Network:
		b.addf("gateway.network", "%q is not this host's network (node.network %q): a gateway serves the network it is on", g.Network, node.Network)
	}
	g.Addresses = b.roleAddrs("gateway", "clients of other networks reach the gateway there", f.Addresses, owners)
	return g
}

func (b *builder) dns(f DNSFile) DNS {
	d := DNS{
		Enabled: f.Enabled == nil || *f.Enabled,
		Listen:  b.addrPort("dns.listen", orDefault(f.Listen, DefaultDNSListen)),
		Capture: f.Capture,
		Domains: f.Domains,
	}
	if f.Domains == nil {
		d.Domains = []string{"default.svc." + DefaultClusterDomain, "svc." + DefaultClusterDomain, DefaultClusterDomain}
	}
	if d.Listen.IsValid() && !d.Listen.Addr().IsLoopback() {
		b.addf("dns.listen", "%s is not a loopback address; the DNS proxy serves this host only", d.Listen)
	}
	if d.Capture && !d.Enabled {
		b.addf("dns.capture", "capturing DNS needs the proxy: set enabled = true")
	}
	if d.Capture && d.Listen.IsValid() && d.Listen.Addr() != netip.AddrFrom4([4]byte{127, 0, 0, 1}) {
		b.addf("dns.listen", "%s: captured DNS is redirected to 127.0.0.1; listen there", d.Listen)
	}
	self := proxyAddrs(d)
	for i, u := range f.Upstreams {
		key := fmt.Sprintf("dns.upstreams[%d]", i)
		var ap netip.AddrPort
		if a, err := netip.ParseAddr(u); err == nil {
			ap = netip.AddrPortFrom(a, 53)
		} else if ap = b.addrPort(key, u); !ap.IsValid() {
			continue
		}
		// An upstream that is the proxy gets every query it forwards back,
		// until the proxy's inflight limit is reached.
		if slices.Contains(self, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())) {
			b.addf(key, "%s is the DNS proxy's own address (dns.listen %s); it would forward every query to itself", ap, d.Listen)
		}
		d.Upstreams = append(d.Upstreams, ap)
	}
	for i, dom := range d.Domains {
		if !IsDNSSubdomain(strings.TrimSuffix(dom, ".")) {
			b.addf(fmt.Sprintf("dns.domains[%d]", i), "%q is not a DNS name", dom)
		}
	}
	return d
}

// proxyAddrs are the addresses the DNS proxy serves: the listen address and,
// with capture, [::1] on its port (IPv6 queries are redirected there).
func proxyAddrs(d DNS) []netip.AddrPort {
	if !d.Listen.IsValid() {
		return nil
	}
	self := []netip.AddrPort{netip.AddrPortFrom(d.Listen.Addr().Unmap(), d.Listen.Port())}
	if d.Capture {
		self = append(self, netip.AddrPortFrom(netip.IPv6Loopback(), d.Listen.Port()))
	}
	return self
}

// enforcement checks [policy] waypoint_enforcement and the hairpin identity
// (spec/routing.md, "Waypoint enforcement"). Hairpin is opt-in: it refuses
// the HBONE callers Istio lets bypass a waypoint (gateways, sidecars,
// ztunnels), so with [istio] it needs hairpin_with_istio.
func (b *builder) enforcement(f PolicyFile, cfg *Config) (string, *HairpinIdentity) {
	s := orDefault(f.WaypointEnforcement, EnforcePolicy)
	set := f.HairpinNamespace != "" || f.HairpinServiceAccount != "" || f.HairpinWithIstio
	switch s {
	case EnforcePolicy:
		if set {
			b.addf("policy.hairpin_service_account", "the hairpin settings apply only with waypoint_enforcement = %q", EnforceHairpin)
		}
		return s, nil
	case EnforceHairpin:
	default:
		b.addf("policy.waypoint_enforcement", "%q is not one of %q, %q", s, EnforcePolicy, EnforceHairpin)
		return s, nil
	}
	if cfg.Istio.Enabled && !f.HairpinWithIstio {
		b.addf("policy.waypoint_enforcement", "%q refuses the HBONE callers Istio lets bypass a waypoint (ingress and east-west gateways, sidecars, ztunnels); with [istio] use %q, or set hairpin_with_istio = true to accept that", EnforceHairpin, EnforcePolicy)
	}
	if f.HairpinServiceAccount == "" {
		// Valid, so that a configuration from before hairpin identities still
		// starts, and closed: plaintext callers that would be hairpinned are
		// refused (Warnings says so).
		return s, nil
	}
	h := &HairpinIdentity{Namespace: orDefault(f.HairpinNamespace, DefaultNamespace), ServiceAccount: f.HairpinServiceAccount}
	if !IsDNSLabel(h.Namespace) {
		b.addf("policy.hairpin_namespace", "%q is not a DNS label", h.Namespace)
	}
	if !IsDNSSubdomain(h.ServiceAccount) {
		b.addf("policy.hairpin_service_account", "%q is not a DNS name", h.ServiceAccount)
	}
	for _, w := range cfg.Workloads {
		if w.Namespace == h.Namespace && w.ServiceAccount == h.ServiceAccount {
			b.addf("policy.hairpin_service_account", "%s/%s is the identity of workload %s; the hairpin identity must be one no workload has", h.Namespace, h.ServiceAccount, w.Name)
		}
	}
	for _, w := range cfg.Remotes { // holding it would let this host pass for another host's workload
		if w.Namespace == h.Namespace && w.ServiceAccount == h.ServiceAccount {
			b.addf("policy.hairpin_service_account", "%s/%s is the identity of remote workload %s; the hairpin identity must be one no workload has", h.Namespace, h.ServiceAccount, w.Name)
		}
	}
	if wp := cfg.Waypoint; wp.Enabled && wp.Namespace == h.Namespace && wp.ServiceAccount == h.ServiceAccount {
		b.addf("policy.hairpin_service_account", "%s/%s is the identity of this host's waypoint; the hairpin identity must be its own", h.Namespace, h.ServiceAccount)
	}
	return s, h
}

// Warnings are what in a valid configuration may not do what its author
// expects: `validate` prints them and the agent logs them at start.
func (c *Config) Warnings() []string {
	var out []string
	if c.Policy.WaypointEnforcement == EnforceHairpin && c.Policy.Hairpin == nil {
		out = append(out, fmt.Sprintf(`policy.waypoint_enforcement = %q without hairpin_service_account: plaintext callers of local workloads with their own waypoint are refused (a hairpin presents a dedicated identity of the host, never the destination's); set hairpin_service_account, or waypoint_enforcement = %q`, EnforceHairpin, EnforcePolicy))
	}
	if g := c.Gateway; g.Enabled && c.Gossip.Enabled && !slices.Contains(c.Gossip.GatewayIdentities, g.Namespace+"/"+g.ServiceAccount) {
		out = append(out, fmt.Sprintf("gateway: identity %s/%s is not in gossip.gateway_identities %v: peers with the same list ignore this gateway",
			g.Namespace, g.ServiceAccount, c.Gossip.GatewayIdentities))
	}
	if wp := c.Waypoint; wp.Enabled {
		// Before explicit binding (Istio 1.22 semantics), these used the waypoint
		// of their namespace; now nothing is bound by namespace alone.
		for i, w := range c.Workloads {
			if w.UseWaypoint == "" && w.Namespace == wp.Namespace {
				out = append(out, fmt.Sprintf("workload[%d] (%s/%s) names no waypoint, so waypoint %s/%s of its namespace does not serve it: waypoints apply only where use_waypoint names them; set use_waypoint = %q to use it, or \"none\"",
					i, w.Namespace, w.Name, wp.Namespace, wp.Name, wp.Name))
			}
		}
		for i, s := range c.Services {
			if s.UseWaypoint == "" && s.Namespace == wp.Namespace {
				out = append(out, fmt.Sprintf("service[%d] (%s/%s) names no waypoint, so waypoint %s/%s of its namespace does not serve it: waypoints apply only where use_waypoint names them; set use_waypoint = %q to use it, or \"none\"",
					i, s.Namespace, s.Name, wp.Namespace, wp.Name, wp.Name))
			}
		}
	}
	return out
}
