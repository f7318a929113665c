package config

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultGatewayIdentity is the identity of Istio's east-west gateway, the one peers' gateways may have unless
// [gossip] gateway_identities says otherwise.
const DefaultGatewayIdentity = DefaultGatewayNamespace + "/" + DefaultGatewaySA

// gatewayIdentities checks [gossip] gateway_identities: "namespace/service_account" each (nil: the default).
func (b *builder) gatewayIdentities(ids []string) []string {
	if ids == nil {
		return []string{DefaultGatewayIdentity}
	}
	out := []string{}
	for i, id := range ids {
		ns, sa, ok := strings.Cut(id, "/")
		if !ok || !IsDNSLabel(ns) || !IsDNSSubdomain(sa) {
			b.addf(fmt.Sprintf("gossip.gateway_identities[%d]", i), "%q is not namespace/service_account", id)
			continue
		}
		out = append(out, id)
	}
	return out
}

func (b *builder) gossip(f GossipFile) Gossip {
	g := Gossip{
		Enabled:         f.Enabled != nil && *f.Enabled,
		Join:            f.Join,
		KeyFile:         orDefault(f.KeyFile, DefaultGossipKey),
		InsecureDevMode: f.InsecureDevMode,
		GracePeriod:     b.duration("gossip.grace_period", f.GracePeriod, DefaultGracePeriod),
		AcceptUnsigned:  f.AcceptUnsigned,

		RequireAddressProof: f.RequireAddressProof,
		AllowedHostnames:    b.allowedHostnames(f.AllowedHostnames),
		AllowedVIPs:         b.allowedVIPs(f.AllowedVIPs),
		GatewayIdentities:   b.gatewayIdentities(f.GatewayIdentities),
	}
	g.Bind = b.addrPort("gossip.bind", orDefault(f.Bind, "0.0.0.0:"+strconv.Itoa(DefaultGossipPort)))
	if f.Advertise != "" {
		g.Advertise = b.addrPort("gossip.advertise", f.Advertise)
		if g.Advertise.IsValid() && g.Advertise.Addr().IsUnspecified() {
			b.addf("gossip.advertise", "%s is unspecified; give the address other hosts reach this one on", g.Advertise)
		}
	}
	b.seeds(f.Join)
	if g.GracePeriod < 0 || g.GracePeriod > 24*time.Hour {
		b.addf("gossip.grace_period", "%s is out of range [0s, 24h]", g.GracePeriod)
	}
	if g.Bind.IsValid() && slices.Contains(agentPorts, g.Bind.Port()) {
		b.addf("gossip.bind", "port %d is one of the agent's own ports", g.Bind.Port())
	}
	return g
}

// allowedHostnames are the domains peers may declare services under, lower-cased and without a final dot.
func (b *builder) allowedHostnames(names []string) []string {
	var out []string
	for i, h := range names {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if !IsDNSSubdomain(h) {
			b.addf(fmt.Sprintf("gossip.allowed_hostnames[%d]", i), "%q is not a DNS domain", names[i])
			continue
		}
		out = append(out, h)
	}
	return out
}

// allowedVIPs are the CIDRs peers may declare service VIPs in: never loopback, link-local, multicast or
// everything.
func (b *builder) allowedVIPs(cidrs []string) []netip.Prefix {
	var out []netip.Prefix
	for i, v := range cidrs {
		key := fmt.Sprintf("gossip.allowed_vips[%d]", i)
		p, err := netip.ParsePrefix(v)
		if err != nil {
			b.addf(key, "%q is not a CIDR (e.g. \"10.96.0.0/12\")", v)
			continue
		}
		p = p.Masked()
		if a := p.Addr(); a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() || p.Bits() == 0 {
			b.addf(key, "%s would let peers capture loopback, link-local, multicast or every address", p)
			continue
		}
		out = append(out, p)
	}
	return out
}

// seeds checks each seed is host:port, the host an address or a DNS name.
func (b *builder) seeds(join []string) {
	for i, seed := range join {
		host, port, err := net.SplitHostPort(seed)
		key := fmt.Sprintf("gossip.join[%d]", i)
		if err != nil {
			b.addf(key, "%q is not host:port (e.g. \"10.0.0.2:7946\")", seed)
			continue
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			b.addf(key, "%q has no valid port", seed)
		}
		if _, err := netip.ParseAddr(host); err != nil && !IsDNSSubdomain(host) {
			b.addf(key, "%q is neither an IP address nor a DNS name", host)
		}
	}
}

// GossipPort is the port capture must leave alone inbound.
func (c *Config) GossipPort() uint16 {
	if !c.Gossip.Enabled {
		return 0
	}
	return c.Gossip.Bind.Port()
}

// publishable refuses a [[service]] that peers would refuse from this host's gossip record (docs/gossip.md,
// "Trust"), on the assumption that every host has the same [dns] domains and [gossip] lists: a hostname outside
// the mesh's domains, an explicit VIP outside the allocation ranges and allowed_vips.
func (b *builder) publishable(cfg *Config) {
	if !cfg.Gossip.Enabled {
		return
	}
	for i, w := range cfg.Workloads {
		b.hostAddrs(fmt.Sprintf("workload[%d].addresses", i), w.Addresses)
	}
	if cfg.Waypoint.Enabled {
		b.hostAddrs("waypoint.addresses", cfg.Waypoint.Addresses)
	}
	domains := append(append([]string(nil), cfg.DNS.Domains...), cfg.Gossip.AllowedHostnames...)
	for i, s := range cfg.Services {
		key := fmt.Sprintf("service[%d]", i)
		if !InDomains(s.Hostname, domains) {
			b.addf(key+".hostname", "%q is outside [dns] domains and [gossip] allowed_hostnames: peers would refuse the service; add its domain to allowed_hostnames on every host", s.Hostname)
		}
		for j, v := range s.VIPs {
			if !AllowedVIP(v, cfg.Gossip.AllowedVIPs) {
				b.addf(fmt.Sprintf("%s.vips[%d]", key, j), "%s is outside the allocation ranges (%s, %s) and [gossip] allowed_vips: peers would refuse the service; add a CIDR that covers it to allowed_vips on every host", v, VIPRangeV4, VIPRangeV6)
			}
		}
	}
}

// hostAddrs refuses, for what this host publishes, addresses its peers refuse: link-local ones (the metadata
// service's among them) and the VIP allocation ranges.
func (b *builder) hostAddrs(key string, addrs []netip.Addr) {
	for _, a := range addrs {
		if why := HostAddrProblem(a); why != "" {
			b.addf(key, "%s is %s: peers would refuse this host's gossip record", a, why)
		}
	}
}

// InDomains reports whether host is one of domains or a name under one.
func InDomains(host string, domains []string) bool {
	for _, d := range domains {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if host == d || strings.HasSuffix(host, "."+d) {
			return true
		}
	}
	return false
}
