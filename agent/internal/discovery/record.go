package discovery

import (
	"net/netip"
	"slices"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// Record is what one node publishes about itself: the Istio workload fields of its workloads, the services they
// back and the waypoint it runs. Optional parts (services, waypoint) may be empty.
//
// A Record handed to SetLocal is copied; a Record returned by Records is shared and must not be modified.
type Record struct {
	// Node is the publishing node's name; SetLocal fills it in.
	Node string `json:"node"`
	// Version orders the records of one node; SetLocal assigns it (start-time based, so a restarted node's
	// records are newer than the ones before the restart).
	Version      uint64 `json:"version"`
	AgentVersion string `json:"agentVersion,omitempty"`
	// Address is the node's gossip address; discovery fills it in. A node that receives the record of a node it
	// does not know yet (memberlist's membership gossip missed it) joins it there instead of waiting for the next
	// push/pull.
	Address netip.AddrPort `json:"address,omitzero"`
	// Workloads are the node's workloads. On the wire only the fields of Istio's Workload travel; UID, Node and
	// Local are derived by the receiver ("<node>/<namespace>/<name>", the publishing node, false).
	Workloads []*state.Workload `json:"workloads,omitempty"`
	Services  []Service         `json:"services,omitempty"`
	Waypoint  *Waypoint         `json:"waypoint,omitempty"`
	Gateway   *Gateway          `json:"gateway,omitempty"`
	// Proofs sign the record, one per identity it claims (proof.go); SetLocal makes them.
	Proofs []Proof `json:"-"`
	// signedLen is how many bytes of the received encoding the proofs sign.
	signedLen int
}

// Service is a service that workloads of the publishing node back. The mesh-wide service is the union over the
// records of all nodes.
type Service struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Hostname  string `json:"hostname"`
	// Addresses are the VIPs; empty means allocated by the receivers (spec/routing.md).
	Addresses []netip.Addr  `json:"addresses,omitempty"`
	Ports     []ServicePort `json:"ports"`
	// Workloads are "namespace/name" of the record's workloads that back the service.
	Workloads []string `json:"workloads"`
	// UseWaypoint is "", "none", "name" or "namespace/name".
	UseWaypoint string `json:"useWaypoint,omitempty"`
	// ServiceAccounts widens who may back the service beyond the backing workloads' service accounts.
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
}

// ServicePort maps a service port to the port the backing workloads listen on.
type ServicePort struct {
	Port uint16 `json:"port"`
	// TargetPort is the workloads' port; 0 means the same as Port.
	TargetPort  uint16 `json:"targetPort,omitempty"`
	AppProtocol string `json:"appProtocol,omitempty"`
}

// Waypoint is a waypoint the publishing node runs: where it is, who it is, and what it serves.
type Waypoint struct {
	// Name names the waypoint within Namespace; instances on several nodes share it. Empty reads as "waypoint".
	Name      string       `json:"name,omitempty"`
	Addresses []netip.Addr `json:"addresses"`
	// Namespace, ServiceAccount and TrustDomain are the waypoint's identity; its scope is Namespace.
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	TrustDomain    string `json:"trustDomain"`
	// ForServiceAccount narrows the scope to the workloads of one service account of Namespace
	// (istio.io/for-service-account); empty serves the whole namespace.
	ForServiceAccount string `json:"forServiceAccount,omitempty"`
}

// Gateway is the east-west gateway the publishing node runs for its network (docs/multi-network.md).
type Gateway struct {
	Network   string       `json:"network"`
	Addresses []netip.Addr `json:"addresses"`
	// Namespace, ServiceAccount and TrustDomain are the gateway's identity.
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	TrustDomain    string `json:"trustDomain"`
}

// DefaultGatewayIdentities is Istio's east-west gateway's identity.
var DefaultGatewayIdentities = []string{"istio-system/istio-eastwestgateway"}

// remoteGateway derives the network gateway of a record received from another node: only a signed one whose
// identity is allowed to be a gateway (allowed: namespace/service account pairs), so that no member that holds
// some other identity can draw other networks' traffic to itself.
func remoteGateway(r *Record, p proven, allowed []string) *state.NetworkGateway {
	g := r.Gateway
	if g == nil || !p.signed || !slices.Contains(allowed, g.Namespace+"/"+g.ServiceAccount) {
		return nil
	}
	id, err := identityOf(g.TrustDomain, g.Namespace, g.ServiceAccount)
	if err != nil {
		return nil
	}
	return &state.NetworkGateway{Network: g.Network, Addresses: g.Addresses, Identity: id.String(), Node: r.Node, Origin: p.origin()}
}

// remoteWorkloads derives the state workloads of a record received from another node, with what its proofs
// establish.
func remoteWorkloads(r *Record, p proven) []*state.Workload {
	out := make([]*state.Workload, 0, len(r.Workloads))
	for _, w := range r.Workloads {
		c := *w
		// Shared with the other workloads that have the same (intern.go): only a verified record's reach here.
		c.Labels = internLabels(w.Labels)
		c.Namespace, c.ServiceAccount, c.TrustDomain = intern(w.Namespace), intern(w.ServiceAccount), intern(w.TrustDomain)
		c.UID = r.Node + "/" + w.Namespace + "/" + w.Name
		c.Node = r.Node
		c.Local = false
		if c.Capacity == 0 {
			c.Capacity = 1
		}
		c.Primary = false
		c.Origin = p.origin()
		c.AddressProven = p.signed && p.claimProven(w.TrustDomain, w.Namespace, w.ServiceAccount, w.Addresses)
		out = append(out, &c)
	}
	state.MarkPrimaries(out)
	return out
}

// remoteServices derives the service declarations of a record received from another node.
func remoteServices(r *Record, p proven) []state.ServiceDecl {
	out := make([]state.ServiceDecl, 0, len(r.Services))
	for _, s := range r.Services {
		d := state.ServiceDecl{Node: r.Node, Name: s.Name, Namespace: s.Namespace, Hostname: s.Hostname,
			VIPs: s.Addresses, UseWaypoint: s.UseWaypoint, ServiceAccounts: s.ServiceAccounts, Origin: p.origin()}
		for _, p := range s.Ports {
			target := p.TargetPort
			if target == 0 {
				target = p.Port
			}
			d.Ports = append(d.Ports, state.ServicePort{Port: p.Port, TargetPort: target, AppProtocol: p.AppProtocol})
		}
		for _, w := range s.Workloads {
			d.Workloads = append(d.Workloads, r.Node+"/"+w)
		}
		out = append(out, d)
	}
	return out
}

// remoteWaypoint derives the waypoint instance of a record received from another node.
func remoteWaypoint(r *Record, p proven) *state.Waypoint {
	if r.Waypoint == nil {
		return nil
	}
	w := r.Waypoint
	name := w.Name
	if name == "" {
		name = "waypoint"
	}
	return &state.Waypoint{Name: name, Namespace: w.Namespace, ServiceAccount: w.ServiceAccount, TrustDomain: w.TrustDomain,
		ForServiceAccount: w.ForServiceAccount, Addresses: w.Addresses, Node: r.Node, Origin: p.origin(),
		AddressProven: p.signed && p.claimProven(w.TrustDomain, w.Namespace, w.ServiceAccount, w.Addresses)}
}

// LocalServices converts the services of this node's record into the form Record carries.
func LocalServices(decls []state.ServiceDecl) []Service {
	out := make([]Service, 0, len(decls))
	for _, d := range decls {
		s := Service{Name: d.Name, Namespace: d.Namespace, Hostname: d.Hostname, Addresses: d.VIPs, UseWaypoint: d.UseWaypoint,
			ServiceAccounts: d.ServiceAccounts}
		for _, p := range d.Ports {
			s.Ports = append(s.Ports, ServicePort{Port: p.Port, TargetPort: p.TargetPort, AppProtocol: p.AppProtocol})
		}
		prefix := d.Node + "/"
		for _, uid := range d.Workloads {
			if len(uid) > len(prefix) && uid[:len(prefix)] == prefix {
				s.Workloads = append(s.Workloads, uid[len(prefix):])
			}
		}
		out = append(out, s)
	}
	return out
}

// LocalWaypoint converts this node's waypoint instance into the form Record carries.
func LocalWaypoint(w *state.Waypoint) *Waypoint {
	if w == nil {
		return nil
	}
	return &Waypoint{Name: w.Name, Addresses: w.Addresses, Namespace: w.Namespace, ServiceAccount: w.ServiceAccount,
		TrustDomain: w.TrustDomain, ForServiceAccount: w.ForServiceAccount}
}
