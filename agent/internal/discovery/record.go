package discovery

import (
	"net/netip"

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
	Addresses []netip.Addr `json:"addresses"`
	// Namespace, ServiceAccount and TrustDomain are the waypoint's identity; its scope is Namespace.
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	TrustDomain    string `json:"trustDomain"`
	// ForServiceAccount narrows the scope to the workloads of one service account of Namespace
	// (istio.io/for-service-account); empty serves the whole namespace.
	ForServiceAccount string `json:"forServiceAccount,omitempty"`
}

// remoteWorkloads derives the state workloads of a record received from another node.
func remoteWorkloads(r *Record) []*state.Workload {
	out := make([]*state.Workload, 0, len(r.Workloads))
	for _, w := range r.Workloads {
		c := *w
		c.UID = r.Node + "/" + w.Namespace + "/" + w.Name
		c.Node = r.Node
		c.Local = false
		if c.Capacity == 0 {
			c.Capacity = 1
		}
		out = append(out, &c)
	}
	return out
}
