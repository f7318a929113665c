package state

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

// Limits bound what gossip may declare about services; the host's own
// configuration and istiod are not bound by them.
type Limits struct {
	// Domains are the DNS domains gossip-declared hostnames must be in (the
	// domain itself or a name under it): [dns] domains and [gossip]
	// allowed_hostnames. None: gossip declares no hostname.
	Domains []string
	// VIPs are where explicit VIPs declared by gossip may be, besides the
	// allocation ranges ([gossip] allowed_vips).
	VIPs []netip.Prefix
	// RequireAddressProof uses a gossip workload only when its certificate's
	// IP SANs name its addresses ([gossip] require_address_proof).
	RequireAddressProof bool
}

// Why a declaration was refused or did not count (ServiceConflict.What).
const (
	declOtherNamespace = "a backing workload is of another namespace"
	declHostname       = "hostname outside the mesh domains ([dns] domains, [gossip] allowed_hostnames)"
	declHostnameNS     = "a <name>.<namespace>.svc.<domain> hostname of another service or namespace"
	declVIP            = "an explicit VIP outside the allocation ranges and [gossip] allowed_vips, or loopback, link-local or multicast"
	declServiceAccount = "a backing workload's service account is not one the service allows"
	declDiffers        = "declared with a different hostname, VIPs, waypoint or service accounts"
	declContested      = "contested: declarations of one rank disagree and none is established; the service is not routed"
)

// declReasons name the refusals above in metrics.
var declReasons = map[string]string{
	declOtherNamespace: "other_namespace", declHostname: "hostname_outside_mesh", declHostnameNS: "hostname_of_another_namespace", declVIP: "vip_not_allowed",
	declServiceAccount: "service_account_not_allowed", declDiffers: "declared_differently", declContested: "contested",
}

// rank is how strongly d defines its service (origin.go).
func (d *ServiceDecl) rank() int {
	switch {
	case d.Local || d.Origin == OriginConfig:
		return rankConfig
	case d.Origin == OriginIstiod:
		return rankIstiod
	case d.Origin == OriginGossip, d.Origin == OriginUnsigned:
		return rankGossip
	}
	return rankUnsigned
}

// refuseDecl says why a gossip declaration may not be used at all ("" when it may).
func (s *Snapshot) refuseDecl(d *ServiceDecl, lim Limits) string {
	if d.rank() <= rankIstiod {
		return ""
	}
	for _, uid := range d.Workloads {
		if w, ok := s.byUID[uid]; ok && w.Namespace != d.Namespace {
			return declOtherNamespace
		}
	}
	if !config.InDomains(d.Hostname, lim.Domains) {
		return declHostname
	}
	if kubernetesStyle(d.Hostname) && !strings.HasPrefix(d.Hostname, d.Name+"."+d.Namespace+".svc.") {
		return declHostnameNS
	}
	for _, a := range d.VIPs {
		if !config.AllowedVIP(a, lim.VIPs) {
			return declVIP
		}
	}
	return ""
}

// kubernetesStyle reports whether a hostname has a "svc" label past its
// first: the form <name>.<namespace>.svc.<domain>, which a gossip service may
// use only for its own name and namespace.
func kubernetesStyle(host string) bool {
	_, rest, ok := strings.Cut(host, ".")
	for ok {
		var label string
		label, rest, ok = strings.Cut(rest, ".")
		if label == "svc" {
			return true
		}
	}
	return false
}

// mergeService builds one service from its declarations (one key). The
// definition (hostname, VIPs, waypoint, the service accounts allowed to back
// it) comes from the strongest origin:
//   - configuration or istiod: its first declaration;
//   - gossip, on a service this agent already routes (prev): the declarations
//     of workloads whose service accounts it allows; they may change the
//     definition when they agree, else the established one stays;
//   - gossip, on a service new here: all declarations must agree.
//
// Other declarations join (add endpoints and ports) only when they declare the
// same definition and their workloads' service accounts are allowed. It returns
// nil when no definition could be chosen.
func (s *Snapshot) mergeService(ds []*ServiceDecl, prev *Snapshot) (*Service, int) {
	slices.SortStableFunc(ds, func(a, b *ServiceDecl) int {
		if a.rank() != b.rank() {
			return a.rank() - b.rank()
		}
		return strings.Compare(a.Node, b.Node)
	})
	best := ds[0].rank()
	def, allowed := s.chooseDefinition(ds, best, prev)
	if def == nil {
		for _, d := range ds {
			s.svcConflicts = append(s.svcConflicts, ServiceConflict{Service: d.key(), Loser: d.Node, What: declContested})
		}
		return nil, best
	}
	kept := *def // a copy: a pointer into the input's declarations would keep them all alive with the snapshot
	svc := &Service{Name: def.Name, Namespace: def.Namespace, Hostname: def.Hostname, Addresses: slices.Clone(def.VIPs),
		Ports: slices.Clone(def.Ports), UseWaypoint: def.UseWaypoint, ServiceAccounts: allowed, Traffic: def.Traffic, def: &kept}
	for _, d := range ds {
		if d != def {
			if why := s.joins(d, def, allowed); why != "" {
				s.svcConflicts = append(s.svcConflicts, ServiceConflict{Service: d.key(), Winner: def.Node, Loser: d.Node, What: why})
				continue
			}
			mergePorts(svc, d.Ports)
		}
		svc.Nodes = append(svc.Nodes, d.Node)
		for _, uid := range d.Workloads {
			if w, ok := s.byUID[uid]; ok && !s.lost[uid] {
				svc.Endpoints = append(svc.Endpoints, &Endpoint{Workload: w, UID: uid, Ports: d.Ports})
			}
		}
	}
	return svc, best
}

// chooseDefinition picks the declaration that defines the service and the
// service accounts it allows; nil when the declarations of rank best disagree
// and none is established.
func (s *Snapshot) chooseDefinition(ds []*ServiceDecl, best int, prev *Snapshot) (*ServiceDecl, []string) {
	if best <= rankIstiod {
		def := ds[0]
		return def, s.allowedBy(def, ds)
	}
	top := ds[:0:0]
	for _, d := range ds {
		if d.rank() == best {
			top = append(top, d)
		}
	}
	if old := prev.serviceByKey(top[0].key()); old != nil && old.def != nil {
		var mine []*ServiceDecl
		for _, d := range top {
			if subset(s.backingSAs(d), old.ServiceAccounts) {
				mine = append(mine, d)
			}
		}
		if def := s.agreeing(mine); def != nil {
			return def, s.allowedOf(def)
		}
		for _, d := range mine {
			if d.sameDefinition(old.def) && slices.Equal(s.allowedOf(d), old.ServiceAccounts) {
				return d, old.ServiceAccounts
			}
		}
		return nil, nil
	}
	if def := s.agreeing(top); def != nil {
		return def, s.allowedOf(def)
	}
	return nil, nil
}

// agreeing returns the first of ds when they all declare one definition and
// one set of allowed service accounts; nil otherwise.
func (s *Snapshot) agreeing(ds []*ServiceDecl) *ServiceDecl {
	if len(ds) == 0 {
		return nil
	}
	want := s.allowedOf(ds[0])
	for _, d := range ds[1:] {
		if !d.sameDefinition(ds[0]) || !slices.Equal(s.allowedOf(d), want) {
			return nil
		}
	}
	return ds[0]
}

// joins says why d may not add to the service def defines ("" when it may).
func (s *Snapshot) joins(d, def *ServiceDecl, allowed []string) string {
	if !d.sameDefinition(def) {
		return declDiffers
	}
	if !subset(s.backingSAs(d), allowed) {
		return declServiceAccount
	}
	return ""
}

// allowedBy is what a trusted definition allows: the service accounts of its
// own declarations of the same definition, and their explicit lists.
func (s *Snapshot) allowedBy(def *ServiceDecl, ds []*ServiceDecl) []string {
	var out []string
	for _, d := range ds {
		if d.rank() == def.rank() && d.sameDefinition(def) {
			out = append(out, s.allowedOf(d)...)
		}
	}
	return sortedSet(out)
}

// allowedOf is the service accounts one declaration allows: those of its
// backing workloads and its explicit list.
func (s *Snapshot) allowedOf(d *ServiceDecl) []string {
	return sortedSet(append(s.backingSAs(d), d.ServiceAccounts...))
}

// backingSAs are the service accounts of the workloads d names.
func (s *Snapshot) backingSAs(d *ServiceDecl) []string {
	var out []string
	for _, uid := range d.Workloads {
		if w, ok := s.byUID[uid]; ok {
			out = append(out, w.ServiceAccount)
		}
	}
	return sortedSet(out)
}

func sortedSet(ss []string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return slices.Compact(out)
}

func subset(small, big []string) bool {
	for _, x := range small {
		if !slices.Contains(big, x) {
			return false
		}
	}
	return true
}

// ServiceByKey finds a service by "namespace/name".
func (s *Snapshot) ServiceByKey(key string) (*Service, bool) {
	svc := s.serviceByKey(key)
	return s.freshService(svc), svc != nil
}

func (s *Snapshot) serviceByKey(key string) *Service {
	if s == nil {
		return nil
	}
	return s.svcByKey[key]
}

func (s *Snapshot) heldHostname(host, key string) bool {
	if s == nil {
		return false
	}
	svc, ok := s.byHostname[host]
	return ok && svc.Key() == key
}

func (s *Snapshot) heldVIP(a netip.Addr, key string) bool {
	if s == nil {
		return false
	}
	svc, ok := s.byVIP[a]
	return ok && svc.Key() == key
}

// vipHolderKey is the key of the service that held VIP a in s ("" when none
// did, or s is nil): a newcomer's explicit VIP never takes it, allocated or not.
func (s *Snapshot) vipHolderKey(a netip.Addr) string {
	if s == nil {
		return ""
	}
	if svc, ok := s.byVIP[a]; ok {
		return svc.Key()
	}
	return ""
}

// heldAllocated reports whether svc's key held an allocated VIP in s.
func (s *Snapshot) heldAllocated(svc *Service) bool {
	old := s.serviceByKey(svc.Key())
	return old != nil && old.Allocated && len(old.Addresses) > 0
}
