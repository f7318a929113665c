package discovery

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// Bounds of free-text fields.
const (
	maxLabelKey     = 317 // as config: a qualified Kubernetes label key
	maxLabelValue   = 1024
	maxAgentVersion = 64
	maxAppProtocol  = 64
)

// validateRecord checks every name, address and reference of a record. The same rules apply to the local record
// (SetLocal) and to received ones, so a record this agent publishes is never dropped by its peers.
func validateRecord(r *Record) error {
	if !config.IsDNSLabel(r.Node) {
		return fmt.Errorf("node name %q is not a DNS label", r.Node)
	}
	if r.Node == config.ReservedNodeName || r.Node == config.StaticNodeName {
		return fmt.Errorf("node name %q is reserved for what istiod and the configuration declare", r.Node)
	}
	if a := r.Address; a.IsValid() && (a.Port() == 0 || a.Addr().IsUnspecified() || a.Addr().IsMulticast()) {
		return fmt.Errorf("node address %s cannot be used", a)
	}
	if len(r.AgentVersion) > maxAgentVersion || !printable(r.AgentVersion) {
		return fmt.Errorf("agent version %q is not printable or too long", r.AgentVersion)
	}
	if len(r.Proofs) > maxProofs {
		return fmt.Errorf("%d proofs, the limit is %d", len(r.Proofs), maxProofs)
	}
	if len(r.Workloads) > MaxWorkloads || len(r.Services) > MaxServices {
		return fmt.Errorf("%d workloads and %d services, the limits are %d and %d",
			len(r.Workloads), len(r.Services), MaxWorkloads, MaxServices)
	}
	names := make(map[string]bool, len(r.Workloads)) // "namespace/name" of the record's workloads
	owners := map[netip.Addr]*state.Workload{}
	served := map[netip.AddrPort]string{}
	for i, w := range r.Workloads {
		if w == nil {
			return fmt.Errorf("workload[%d] is nil", i)
		}
		key := w.Namespace + "/" + w.Name
		if err := validateWorkload(w); err != nil {
			return fmt.Errorf("workload[%d] %q: %w", i, key, err)
		}
		if names[key] {
			return fmt.Errorf("workload %q appears twice", key)
		}
		names[key] = true
		for _, a := range w.Addresses {
			if prev, dup := owners[a]; dup && (len(prev.Ports) == 0 || len(w.Ports) == 0) {
				return fmt.Errorf("address %s is claimed by both %q and %q, and not both list their ports", a, prev.Namespace+"/"+prev.Name, key)
			}
			if _, dup := owners[a]; !dup {
				owners[a] = w
			}
			for _, p := range w.Ports {
				ap := netip.AddrPortFrom(a, p)
				if prev, dup := served[ap]; dup {
					return fmt.Errorf("%s is served by both %q and %q", ap, prev, key)
				}
				served[ap] = key
			}
		}
	}
	services := make(map[string]bool, len(r.Services))
	for i := range r.Services {
		s := &r.Services[i]
		key := s.Namespace + "/" + s.Name
		if err := validateService(s, names); err != nil {
			return fmt.Errorf("service[%d] %q: %w", i, key, err)
		}
		if services[key] {
			return fmt.Errorf("service %q appears twice", key)
		}
		services[key] = true
	}
	if r.Waypoint != nil {
		if err := validateWaypoint(r.Waypoint); err != nil {
			return fmt.Errorf("waypoint: %w", err)
		}
	}
	if r.Gateway != nil {
		if err := validateGateway(r.Gateway); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}
	return nil
}

func validateWorkload(w *state.Workload) error {
	switch {
	case !config.IsDNSLabel(w.Name):
		return fmt.Errorf("name %q is not a DNS label", w.Name)
	case !config.IsDNSLabel(w.Namespace):
		return fmt.Errorf("namespace %q is not a DNS label", w.Namespace)
	case !config.IsDNSSubdomain(w.ServiceAccount):
		return fmt.Errorf("service account %q is not a DNS name", w.ServiceAccount)
	case w.Network != "" && !config.IsDNSSubdomain(w.Network):
		return fmt.Errorf("network %q is not a DNS name", w.Network)
	case w.Tunnel != state.TunnelHBONE && w.Tunnel != state.TunnelNone:
		return fmt.Errorf("tunnel protocol %q is not %s or %s", w.Tunnel, state.TunnelHBONE, state.TunnelNone)
	case len(w.Labels) > maxLabels:
		return fmt.Errorf("%d labels, the limit is %d", len(w.Labels), maxLabels)
	case !validWaypointRef(w.UseWaypoint):
		return fmt.Errorf("use_waypoint %q is not none, name or namespace/name", w.UseWaypoint)
	case len(w.Ports) > maxPorts:
		return fmt.Errorf("%d ports, the limit is %d", len(w.Ports), maxPorts)
	case w.Capacity > config.MaxCapacity:
		return fmt.Errorf("capacity %d, the limit is %d", w.Capacity, config.MaxCapacity)
	case w.ClusterID != "" && !config.IsLabelValue(w.ClusterID):
		return fmt.Errorf("cluster %q is not a cluster id", w.ClusterID)
	}
	return cmp.Or(validateLocality(w.Locality), uniquePorts(w.Ports), validateTrustDomain(w.TrustDomain),
		validateAddrs(w.Addresses, 1), hostAddrs(w.Addresses), validateLabels(w.Labels))
}

// validateLocality accepts region/zone/subzone of label values, each optional.
func validateLocality(l state.Locality) error {
	for _, part := range []string{l.Region, l.Zone, l.Subzone} {
		if part != "" && !config.IsLabelValue(part) {
			return fmt.Errorf("locality %q is not region/zone/subzone of label values", l.String())
		}
	}
	return nil
}

// uniquePorts refuses a zero port or one listed twice.
func uniquePorts(ports []uint16) error {
	for i, p := range ports {
		if p == 0 || slices.Contains(ports[:i], p) {
			return fmt.Errorf("port %d is zero or appears twice", p)
		}
	}
	return nil
}

// validateLabels refuses an empty, too long or unprintable key or value.
func validateLabels(labels map[string]string) error {
	for k, v := range labels {
		if k == "" || len(k) > maxLabelKey || !printable(k) || len(v) > maxLabelValue || !printable(v) {
			return fmt.Errorf("label %q=%q is empty, too long or not printable", k, v)
		}
	}
	return nil
}

func validateService(s *Service, workloads map[string]bool) error {
	switch {
	case !config.IsDNSLabel(s.Name):
		return fmt.Errorf("name %q is not a DNS label", s.Name)
	case !config.IsDNSLabel(s.Namespace):
		return fmt.Errorf("namespace %q is not a DNS label", s.Namespace)
	case !config.IsDNSSubdomain(s.Hostname):
		return fmt.Errorf("hostname %q is not a DNS name", s.Hostname)
	case len(s.Ports) == 0 || len(s.Ports) > maxPorts:
		return fmt.Errorf("%d ports, want 1 to %d", len(s.Ports), maxPorts)
	case len(s.Workloads) > MaxWorkloads:
		return fmt.Errorf("%d backing workloads, the limit is %d", len(s.Workloads), MaxWorkloads)
	case !validWaypointRef(s.UseWaypoint):
		return fmt.Errorf("use_waypoint %q is not none, name or namespace/name", s.UseWaypoint)
	}
	return cmp.Or(validateAddrs(s.Addresses, 0), servicePorts(s.Ports), backingWorkloads(s, workloads),
		serviceAccounts(s.ServiceAccounts))
}

// servicePorts refuses a zero port, one listed twice, or an unprintable or too
// long app protocol.
func servicePorts(ports []ServicePort) error {
	seen := make(map[uint16]bool, len(ports))
	for _, p := range ports {
		if p.Port == 0 || seen[p.Port] {
			return fmt.Errorf("port %d is zero or appears twice", p.Port)
		}
		seen[p.Port] = true
		if len(p.AppProtocol) > maxAppProtocol || !printable(p.AppProtocol) {
			return fmt.Errorf("port %d: app protocol %q is not printable or too long", p.Port, p.AppProtocol)
		}
	}
	return nil
}

// backingWorkloads accepts a service only of workloads of the record and of
// the service's namespace.
func backingWorkloads(s *Service, workloads map[string]bool) error {
	if len(s.Workloads) == 0 {
		return fmt.Errorf("no backing workload: a record declares only services its own workloads back")
	}
	for _, w := range s.Workloads {
		if !workloads[w] {
			return fmt.Errorf("backing workload %q is not in the record", w)
		}
		if ns, _, _ := strings.Cut(w, "/"); ns != s.Namespace {
			return fmt.Errorf("backing workload %q is not of namespace %q", w, s.Namespace)
		}
	}
	return nil
}

func serviceAccounts(sas []string) error {
	for _, sa := range sas {
		if !config.IsDNSSubdomain(sa) {
			return fmt.Errorf("service account %q is not a DNS name", sa)
		}
	}
	return nil
}

func validateWaypoint(w *Waypoint) error {
	switch {
	case w.Name != "" && !config.IsDNSLabel(w.Name):
		return fmt.Errorf("name %q is not a DNS label", w.Name)
	case !config.IsDNSLabel(w.Namespace):
		return fmt.Errorf("namespace %q is not a DNS label", w.Namespace)
	case !config.IsDNSSubdomain(w.ServiceAccount):
		return fmt.Errorf("service account %q is not a DNS name", w.ServiceAccount)
	case w.ForServiceAccount != "" && !config.IsDNSSubdomain(w.ForServiceAccount):
		return fmt.Errorf("scope service account %q is not a DNS name", w.ForServiceAccount)
	}
	if err := validateTrustDomain(w.TrustDomain); err != nil {
		return err
	}
	if err := validateAddrs(w.Addresses, 1); err != nil {
		return err
	}
	return hostAddrs(w.Addresses)
}

func validateGateway(g *Gateway) error {
	switch {
	case !config.IsDNSSubdomain(g.Network):
		return fmt.Errorf("network %q is not a DNS name", g.Network)
	case !config.IsDNSLabel(g.Namespace):
		return fmt.Errorf("namespace %q is not a DNS label", g.Namespace)
	case !config.IsDNSSubdomain(g.ServiceAccount):
		return fmt.Errorf("service account %q is not a DNS name", g.ServiceAccount)
	}
	if err := validateTrustDomain(g.TrustDomain); err != nil {
		return err
	}
	if err := validateAddrs(g.Addresses, 1); err != nil {
		return err
	}
	return hostAddrs(g.Addresses)
}

// hostAddrs refuses, for a workload or a waypoint, the addresses no host of the mesh has: link-local ones (the
// cloud metadata service among them) and the VIP allocation ranges, which a claim would take from a service.
func hostAddrs(addrs []netip.Addr) error {
	for _, a := range addrs {
		if why := config.HostAddrProblem(a); why != "" {
			return fmt.Errorf("address %s is %s", a, why)
		}
	}
	return nil
}

func validateTrustDomain(td string) error {
	if _, err := spiffeid.TrustDomainFromString(td); err != nil || strings.Contains(td, "/") {
		return fmt.Errorf("trust domain %q is not a SPIFFE trust domain", td)
	}
	return nil
}

// validateAddrs accepts min to maxAddresses distinct unicast addresses; loopback, unspecified, multicast and
// zoned addresses would let a record redirect traffic meant for this host or nowhere.
func validateAddrs(addrs []netip.Addr, min int) error {
	if len(addrs) < min || len(addrs) > maxAddresses {
		return fmt.Errorf("%d addresses, want %d to %d", len(addrs), min, maxAddresses)
	}
	for i, a := range addrs {
		if !a.IsValid() || a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() {
			return fmt.Errorf("address %s cannot be used (invalid, unspecified, loopback, multicast or zoned)", a)
		}
		for _, b := range addrs[:i] {
			if a.Unmap() == b.Unmap() {
				return fmt.Errorf("address %s appears twice", a)
			}
		}
	}
	return nil
}

// printable reports whether s has no control characters (it is UTF-8 already: the decoder checks).
func printable(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return false
		}
	}
	return true
}

// validWaypointRef accepts "", "none", "name" and "namespace/name".
func validWaypointRef(ref string) bool {
	if ref == "" || ref == state.UseWaypointNone {
		return true
	}
	ns, name, qualified := strings.Cut(ref, "/")
	if !qualified {
		return config.IsDNSLabel(ref)
	}
	return config.IsDNSLabel(ns) && config.IsDNSLabel(name)
}
