package state

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

func compareStrings(a, b string) int { return strings.Compare(a, b) }

// buildServices merges the declarations into services (service_contest.go
// says which count), allocates the VIPs not given explicitly, and indexes them.
func (s *Snapshot) buildServices(decls []ServiceDecl, prev *Snapshot, lim Limits) {
	s.byVIP = map[netip.Addr]*Service{}
	s.byHostname = map[string]*Service{}
	s.evictFromTrustedVIPs(decls, lim)
	byKey := map[string][]*ServiceDecl{}
	for i := range decls {
		d := &decls[i]
		if reason := s.refuseDecl(d, lim); reason != "" {
			s.svcConflicts = append(s.svcConflicts, ServiceConflict{Service: d.key(), Loser: d.Node, What: reason})
			continue
		}
		byKey[d.key()] = append(byKey[d.key()], d)
	}
	keys := slices.Sorted(maps.Keys(byKey))
	ranks := map[*Service]int{}
	s.svcByKey = make(map[string]*Service, len(keys))
	for _, key := range keys {
		if svc, rank := s.mergeService(byKey[key], prev); svc != nil {
			s.services = append(s.services, svc)
			s.svcByKey[key] = svc
			ranks[svc] = rank
		}
	}
	order := slices.Clone(s.services)
	slices.SortStableFunc(order, func(a, b *Service) int { return cmp.Compare(ranks[a], ranks[b]) })
	s.indexHostnames(order, prev, ranks)
	s.indexVIPs(order, prev, ranks)
	s.indexLocalEndpoints()
}

// localEndpoint is a service a local workload backs, with its endpoint there.
type localEndpoint struct {
	svc *Service
	ep  *Endpoint
}

// indexLocalEndpoints lists, per local workload, the services it backs (in
// service order), for InboundService, and the services with CIDR VIPs.
func (s *Snapshot) indexLocalEndpoints() {
	s.localSvcs = map[string][]localEndpoint{}
	for _, svc := range s.services {
		if len(svc.VIPRanges) > 0 {
			s.ranged = append(s.ranged, svc)
		}
		for _, e := range svc.Endpoints {
			if e.Workload.Local {
				s.localSvcs[e.UID] = append(s.localSvcs[e.UID], localEndpoint{svc, e})
			}
		}
	}
}

// BackedBy returns the services local workload w is an endpoint of, in service order (none for a workload of
// another host).
func (s *Snapshot) BackedBy(w *Workload) []*Service {
	les := s.localSvcs[w.UID]
	out := make([]*Service, 0, len(les))
	for _, le := range les {
		if le.ep.Workload == w {
			out = append(out, s.freshService(le.svc))
		}
	}
	return out
}

// InboundService is the service a connection to local workload w on its
// port was for, as ztunnel guesses it (telemetry only): among the services w
// backs, the one named host (the forwarded header's host=), else the first
// with a port that maps to port on w; nil when none.
func (s *Snapshot) InboundService(w *Workload, host string, port uint16) *Service {
	les := s.localSvcs[w.UID]
	if host != "" {
		for _, le := range les {
			if le.svc.Hostname == host {
				return s.freshService(le.svc)
			}
		}
	}
	for _, le := range les {
		for _, p := range le.ep.Ports {
			if p.TargetPort == port {
				return s.freshService(le.svc)
			}
		}
	}
	return nil
}

// mergePorts adds ports a later node serves that the defining node does not.
func mergePorts(svc *Service, ports []ServicePort) {
	for _, p := range ports {
		if !svc.HasPort(p.Port) {
			svc.Ports = append(svc.Ports, p)
		}
	}
}

// indexHostnames gives each hostname to one service: the strongest origin,
// then the one that held it, then (trusted origins only) the first in key
// order. Gossip services of one rank that contest a hostname none held lose it
// both: DNS does not answer it.
func (s *Snapshot) indexHostnames(order []*Service, prev *Snapshot, ranks map[*Service]int) {
	claims := map[string][]*Service{}
	for _, svc := range order {
		claims[svc.Hostname] = append(claims[svc.Hostname], svc)
	}
	for _, svc := range order {
		cs := claims[svc.Hostname]
		if cs == nil {
			continue // decided
		}
		delete(claims, svc.Hostname)
		winner := pickService(cs, ranks, func(c *Service) bool { return prev.heldHostname(c.Hostname, c.Key()) })
		for _, c := range cs {
			switch {
			case c == winner:
				s.byHostname[c.Hostname] = c
			case winner == nil:
				s.svcConflicts = append(s.svcConflicts, ServiceConflict{Service: c.Key(), Loser: c.Key(),
					What: "hostname " + c.Hostname + " is contested by services of one rank; answered for no one"})
			default:
				s.svcConflicts = append(s.svcConflicts, ServiceConflict{Service: c.Key(), Winner: winner.Key(), Loser: c.Key(),
					What: "hostname " + c.Hostname + " is also another service's"})
			}
		}
	}
}

// pickService chooses among services that claim one name or address: the
// strongest rank; among several of it, the one that held the claim, else the
// first for trusted origins; nil when gossip services contest it.
func pickService(cs []*Service, ranks map[*Service]int, held func(*Service) bool) *Service {
	best := cs[0] // cs are in rank order
	var top []*Service
	for _, c := range cs {
		if ranks[c] == ranks[best] {
			top = append(top, c)
		}
	}
	if len(top) == 1 {
		return best
	}
	for _, c := range top {
		if held(c) {
			return c
		}
	}
	if ranks[best] <= rankIstiod {
		return best
	}
	return nil
}

// indexVIPs indexes explicit VIPs first, then allocates the others, both in
// claim order, probing past addresses already taken by a VIP or a workload.
// An explicit VIP claimed by two services goes as hostnames do.
func (s *Snapshot) indexVIPs(order []*Service, prev *Snapshot, ranks map[*Service]int) {
	explicit := map[*Service]bool{}
	claims := map[netip.Addr][]*Service{}
	for _, svc := range order {
		explicit[svc] = len(svc.Addresses) > 0
		for _, a := range svc.Addresses {
			claims[a] = append(claims[a], svc)
		}
	}
	for _, svc := range order {
		kept := svc.Addresses[:0]
		for _, a := range svc.Addresses {
			if s.explicitVIP(a, svc, claims, prev, ranks) {
				kept = append(kept, a)
			}
		}
		svc.Addresses = kept
	}
	// Services that held an allocated VIP probe first, so a newcomer whose
	// hostname hashes to the same slot cannot move it.
	alloc := slices.Clone(order)
	slices.SortStableFunc(alloc, func(a, b *Service) int {
		return cmp.Compare(boolRank(!prev.heldAllocated(a)), boolRank(!prev.heldAllocated(b)))
	})
	al := allocator{taken: s.vipHolder}
	for _, svc := range alloc {
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

// evictFromTrustedVIPs takes from gossip workloads the addresses that are
// VIPs of this host's configuration or istiod (a ClusterIP), or in the
// operator's VIP ranges: a peer's workload never stands where a service's VIP
// is. It runs before services take their endpoints, so the evicted are none.
func (s *Snapshot) evictFromTrustedVIPs(decls []ServiceDecl, lim Limits) {
	trusted := map[netip.Addr]string{}
	for i := range decls {
		if d := &decls[i]; d.rank() <= rankIstiod {
			for _, a := range d.VIPs {
				trusted[a.Unmap()] = "service " + d.key()
			}
		}
	}
	for a, w := range s.byAddr {
		if w.rank() <= rankIstiod {
			continue
		}
		holder, ok := trusted[a]
		if !ok && slices.ContainsFunc(lim.VIPs, func(p netip.Prefix) bool { return p.Contains(a) }) {
			holder, ok = "[gossip] allowed_vips", true
		}
		if !ok {
			continue
		}
		delete(s.byAddr, a)
		for ap := range s.byAddrPort {
			if ap.Addr() == a {
				delete(s.byAddrPort, ap)
			}
		}
		s.lose(w)
		s.conflicts = append(s.conflicts, Conflict{Address: a, Winner: holder, Loser: w.UID, Reason: ContestVIP})
	}
}

// explicitVIP decides whether svc gets its explicit VIP a, and reports it when not.
func (s *Snapshot) explicitVIP(a netip.Addr, svc *Service, claims map[netip.Addr][]*Service, prev *Snapshot, ranks map[*Service]int) bool {
	if w, ok := s.byAddr[a]; ok {
		s.svcConflicts = append(s.svcConflicts, ServiceConflict{Service: svc.Key(), Winner: "workload " + w.UID, Loser: svc.Key(),
			What: fmt.Sprintf("VIP %s is already workload %s's", a, w.UID)})
		return false
	}
	if s.contested[a] {
		s.svcConflicts = append(s.svcConflicts, ServiceConflict{Service: svc.Key(), Loser: svc.Key(),
			What: fmt.Sprintf("VIP %s is a contested workload address", a)})
		return false
	}
	if held := prev.vipHolderKey(a); held != "" && held != svc.Key() && ranks[svc] > rankIstiod {
		if h := s.serviceByKey(held); h != nil && ranks[h] <= ranks[svc] {
			s.svcConflicts = append(s.svcConflicts, ServiceConflict{Service: svc.Key(), Winner: "service " + held, Loser: svc.Key(),
				What: fmt.Sprintf("VIP %s is already service %s's", a, held)})
			return false
		}
	}
	winner := pickService(claims[a], ranks, func(c *Service) bool { return prev.heldVIP(a, c.Key()) })
	if winner == svc {
		s.byVIP[a] = svc
		return true
	}
	what := fmt.Sprintf("VIP %s is contested by services of one rank; routed to no one", a)
	w := ""
	if winner != nil {
		what, w = fmt.Sprintf("VIP %s is already service %s's", a, winner.Key()), "service "+winner.Key()
	}
	s.svcConflicts = append(s.svcConflicts, ServiceConflict{Service: svc.Key(), Winner: w, Loser: svc.Key(), What: what})
	return false
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
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
func (s *Snapshot) Services() []*Service {
	if s.over == nil {
		return s.services
	}
	out := make([]*Service, len(s.services))
	for i, svc := range s.services {
		out[i] = s.freshService(svc)
	}
	return out
}

// ServiceConflicts returns the service conflicts found when the snapshot was built.
func (s *Snapshot) ServiceConflicts() []ServiceConflict { return s.svcConflicts }

// ServiceByVIP finds the service that owns VIP a.
func (s *Snapshot) ServiceByVIP(a netip.Addr) (*Service, bool) {
	svc, ok := s.byVIP[a.Unmap()]
	return s.freshService(svc), ok
}

// ServiceByHostname finds a service by hostname (lowercase, no trailing dot).
func (s *Snapshot) ServiceByHostname(name string) (*Service, bool) {
	svc, ok := s.byHostname[name]
	return s.freshService(svc), ok
}
