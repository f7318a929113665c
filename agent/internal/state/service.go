package state

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

// Service is a mesh service: the union of what every node that backs it
// declares (istio.workload.Service). Do not modify.
type Service struct {
	Name      string        `json:"name"`
	Namespace string        `json:"namespace"`
	Hostname  string        `json:"hostname"`
	Addresses []netip.Addr  `json:"addresses"` // VIPs, explicit or allocated
	Allocated bool          `json:"allocated,omitempty"`
	Ports     []ServicePort `json:"ports"`
	// UseWaypoint is "", "none", "name" or "namespace/name" (as a workload's).
	UseWaypoint string      `json:"useWaypoint,omitempty"`
	Endpoints   []*Endpoint `json:"endpoints"`
	// Nodes are the nodes that declare the service, the defining one first.
	Nodes []string `json:"nodes"`
	// ServiceAccounts are those whose workloads may back the service: the
	// defining declarations' backing workloads' and explicit lists.
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
	Traffic
	def *ServiceDecl // the defining declaration
}

// ServicePort maps a service port to the port the endpoints listen on.
type ServicePort struct {
	Port        uint16 `json:"port"`
	TargetPort  uint16 `json:"targetPort"`
	AppProtocol string `json:"appProtocol,omitempty"`
}

// Endpoint is one workload behind a service, with the port mapping its node
// declared (so a node that does not serve a port is never picked for it).
type Endpoint struct {
	Workload *Workload     `json:"-"`
	UID      string        `json:"workload"`
	Ports    []ServicePort `json:"ports"`
}

// TargetPort is where the endpoint serves service port p; false when it does not.
func (e *Endpoint) TargetPort(p uint16) (uint16, bool) {
	for _, sp := range e.Ports {
		if sp.Port == p {
			return sp.TargetPort, true
		}
	}
	return 0, false
}

// Key is the service's "namespace/name".
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// HasAddress reports whether a is one of the service's VIPs.
func (s *Service) HasAddress(a netip.Addr) bool { return slices.Contains(s.Addresses, a.Unmap()) }

// TargetPort is the port the service's endpoints serve service port p on when an endpoint has no mapping of its
// own (istiod's target_port); 0 when p is not a service port or has none.
func (s *Service) TargetPort(p uint16) uint16 {
	for _, sp := range s.Ports {
		if sp.Port == p {
			return sp.TargetPort
		}
	}
	return 0
}

// HasPort reports whether the service exposes port p.
func (s *Service) HasPort(p uint16) bool {
	return slices.ContainsFunc(s.Ports, func(sp ServicePort) bool { return sp.Port == p })
}

// ServiceDecl is one node's declaration of a service it backs: the input the
// snapshot merges into Services.
type ServiceDecl struct {
	Node        string
	Local       bool // declared by this host
	Name        string
	Namespace   string
	Hostname    string
	VIPs        []netip.Addr // empty: allocate
	Ports       []ServicePort
	Workloads   []string // UIDs of the backing workloads
	UseWaypoint string
	// ServiceAccounts widens who may back the service beyond the service
	// accounts of Workloads ([[service]] service_accounts).
	ServiceAccounts []string
	Origin          Origin
	Traffic         Traffic // istiod's only
}

// IstiodNode is the node of the declarations learned from istiod (xds
// declares the cluster's services as this node). Where they claim a hostname
// or a VIP that a mesh node's declaration also claims, the mesh node's wins.
const IstiodNode = config.ReservedNodeName

func (d *ServiceDecl) key() string { return d.Namespace + "/" + d.Name }

// sameDefinition reports whether two declarations agree on what the service is.
func (d *ServiceDecl) sameDefinition(o *ServiceDecl) bool {
	return d.Hostname == o.Hostname && slices.Equal(d.VIPs, o.VIPs) && d.UseWaypoint == o.UseWaypoint
}

// ServiceConflict is a declaration that was refused or did not count, or a
// hostname or VIP that two services claim. Winner is the node or service whose
// view the snapshot uses, "" when it uses no one's.
type ServiceConflict struct {
	Service string `json:"service"`
	Winner  string `json:"winner"`
	Loser   string `json:"loser"`
	What    string `json:"what"`
}

// Reason is a short name of why, for metrics.
func (c ServiceConflict) Reason() string {
	if r, ok := declReasons[c.What]; ok {
		return r
	}
	switch {
	case strings.HasPrefix(c.What, "hostname"):
		return "hostname_taken"
	case strings.HasPrefix(c.What, "its allocated VIP"):
		return "vip_moved"
	case strings.HasPrefix(c.What, "VIP"):
		return "vip_taken"
	}
	return "other"
}

func (c ServiceConflict) String() string {
	if c.Winner == "" {
		return fmt.Sprintf("service %s: %s (declared by %s)", c.Service, c.What, c.Loser)
	}
	return fmt.Sprintf("service %s: %s (using %s over %s)", c.Service, c.What, c.Winner, c.Loser)
}
