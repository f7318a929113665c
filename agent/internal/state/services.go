package state

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
)

func compareStrings(a, b string) int { return strings.Compare(a, b) }

// buildServices merges the nodes' declarations into services, allocates the
// VIPs not given explicitly, and indexes them. Everything here depends on the
// declarations only (not on which node builds), so every agent agrees.
func (s *Snapshot) buildServices(decls []ServiceDecl) {
	sorted := make([]*ServiceDecl, len(decls))
	for i := range decls {
		sorted[i] = &decls[i]
	}
	slices.SortStableFunc(sorted, func(a, b *ServiceDecl) int {
		// Of one service declared differently, a mesh node's definition wins over istiod's (rankOf).
		return cmp.Or(strings.Compare(a.key(), b.key()), cmp.Compare(rankOf(a), rankOf(b)), strings.Compare(a.Node, b.Node))
	})
	s.byVIP = map[netip.Addr]*Service{}
	s.byHostname = map[string]*Service{}
	byKey := map[string]*Service{}
	defs := map[string]*ServiceDecl{}
	for _, d := range sorted {
		svc, seen := byKey[d.key()]
		if !seen {
			svc = &Service{Name: d.Name, Namespace: d.Namespace, Hostname: d.Hostname, Addresses: slices.Clone(d.VIPs),
				Ports: slices.Clone(d.Ports), UseWaypoint: d.UseWaypoint}
			byKey[d.key()] = svc
			defs[d.key()] = d
			s.services = append(s.services, svc)
		} else if def := defs[d.key()]; !def.sameDefinition(d) {
			s.svcConflicts = append(s.svcConflicts, ServiceConflict{Service: d.key(), Winner: def.Node, Loser: d.Node,
				What: "declared with a different hostname, VIPs or waypoint"})
		} else {
			mergePorts(svc, d.Ports)
		}
		svc.Nodes = append(svc.Nodes, d.Node)
		for _, uid := range d.Workloads {
			if w, ok := s.byUID[uid]; ok {
				svc.Endpoints = append(svc.Endpoints, &Endpoint{Workload: w, UID: uid, Ports: d.Ports})
			}
		}
	}
	order := claimOrder(s.services, defs)
	s.indexHostnames(order)
	s.indexVIPs(order)
}

// claimOrder is the order in which services claim hostnames and VIPs: the
// services the mesh's nodes define (this host's config, or a peer's through
// gossip) before istiod's, then by key. It depends on the declarations alone,
// so every agent agrees. Preferring this host's own declarations over its
// peers' would not: each agent would keep its own service on a contested VIP.
func claimOrder(services []*Service, defs map[string]*ServiceDecl) []*Service {
	order := slices.Clone(services)
	slices.SortStableFunc(order, func(a, b *Service) int {
		return cmp.Compare(rankOf(defs[a.Key()]), rankOf(defs[b.Key()]))
	})
	return order
}

func rankOf(d *ServiceDecl) int {
	if d.Node == IstiodNode {
		return 1
	}
	return 0
}

// mergePorts adds ports a later node serves that the defining node does not.
func mergePorts(svc *Service, ports []ServicePort) {
	for _, p := range ports {
		if !svc.HasPort(p.Port) {
			svc.Ports = append(svc.Ports, p)
		}
	}
}

// indexHostnames gives each hostname to the first service in order that has it.
func (s *Snapshot) indexHostnames(order []*Service) {
	for _, svc := range order {
		if prev, taken := s.byHostname[svc.Hostname]; taken {
			s.svcConflicts = append(s.svcConflicts, ServiceConflict{Service: svc.Key(), Winner: prev.Key(), Loser: svc.Key(),
				What: "hostname " + svc.Hostname + " is also another service's"})
			continue
		}
		s.byHostname[svc.Hostname] = svc
	}
}

// indexVIPs indexes explicit VIPs first, then allocates the others, both in
// claim order, probing past addresses already taken by a VIP or a workload.
func (s *Snapshot) indexVIPs(order []*Service) {
	explicit := map[*Service]bool{}
	for _, svc := range order {
		explicit[svc] = len(svc.Addresses) > 0
		kept := svc.Addresses[:0]
		for _, a := range svc.Addresses {
			if prev, taken := s.vipHolder(a); taken {
				s.svcConflicts = append(s.svcConflicts, ServiceConflict{Service: svc.Key(), Winner: prev, Loser: svc.Key(),
					What: fmt.Sprintf("VIP %s is already %s's", a, prev)})
				continue
			}
			s.byVIP[a] = svc
			kept = append(kept, a)
		}
		svc.Addresses = kept
	}
	al := allocator{taken: s.vipHolder}
	for _, svc := range order {
		if explicit[svc] { // explicit VIPs that all collided are not replaced silently
			continue
		}
		svc.Allocated = true
		families := []bool{false}
		if s.hasV6Endpoint(svc) {
			families = append(families, true)
		}
		for _, v6 := range families {
			a, collided := al.allocate(svc.Hostname, v6)
			if collided != "" {
				s.svcConflicts = append(s.svcConflicts, ServiceConflict{Service: svc.Key(), Winner: collided, Loser: svc.Key(),
					What: fmt.Sprintf("its allocated VIP collides with %s; moved to %s", collided, a)})
			}
			if a.IsValid() {
				s.byVIP[a] = svc
				svc.Addresses = append(svc.Addresses, a)
			}
		}
	}
}

func (s *Snapshot) vipHolder(a netip.Addr) (string, bool) {
	if svc, ok := s.byVIP[a]; ok {
		return "service " + svc.Key(), true
	}
	if w, ok := s.byAddr[a]; ok {
		return "workload " + w.UID, true
	}
	return "", false
}

func (s *Snapshot) hasV6Endpoint(svc *Service) bool {
	for _, e := range svc.Endpoints {
		for _, a := range e.Workload.Addresses {
			if a.Is6() {
				return true
			}
		}
	}
	return false
}

// Services returns every service, ordered by namespace/name. Do not modify.
func (s *Snapshot) Services() []*Service { return s.services }

// ServiceConflicts returns the service conflicts found when the snapshot was built.
func (s *Snapshot) ServiceConflicts() []ServiceConflict { return s.svcConflicts }

// ServiceByVIP finds the service that owns VIP a.
func (s *Snapshot) ServiceByVIP(a netip.Addr) (*Service, bool) {
	svc, ok := s.byVIP[a.Unmap()]
	return svc, ok
}

// ServiceByHostname finds a service by hostname (lowercase, no trailing dot).
func (s *Snapshot) ServiceByHostname(name string) (*Service, bool) {
	svc, ok := s.byHostname[name]
	return svc, ok
}

// PickEndpoint chooses where a connection to service port p goes: among the
// healthy endpoints that serve p, at random weighted by capacity (intn is
// rand.IntN in production). It returns the endpoint and its target port.
func PickEndpoint(svc *Service, p uint16, intn func(int) int) (*Endpoint, uint16, bool) {
	total := 0
	for _, e := range svc.Endpoints {
		if _, ok := e.TargetPort(p); ok && e.Workload.Healthy {
			total += int(max(e.Workload.Capacity, 1))
		}
	}
	if total == 0 {
		return nil, 0, false
	}
	if intn == nil {
		intn = rand.IntN
	}
	n := intn(total)
	for _, e := range svc.Endpoints {
		target, ok := e.TargetPort(p)
		if !ok || !e.Workload.Healthy {
			continue
		}
		if n -= int(max(e.Workload.Capacity, 1)); n < 0 {
			return e, target, true
		}
	}
	return nil, 0, false
}
