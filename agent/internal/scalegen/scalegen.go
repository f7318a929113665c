// Package scalegen generates meshes of a given size for the scale harness (make bench-scale, docs/scale.md):
// the same mesh as gossip records and as the state input they become, so that every benchmark of the harness
// measures one shape.
//
// The shape: N workloads on N/10 hosts, ten to a host. Each workload has an IPv4 and an IPv6 address, four
// labels, two ports (8080 and 9090), an HBONE tunnel and a service account. Each backs one service: every group
// of 20 consecutive hosts backs ten services (one per workload index), so there are N/20 services of 20
// endpoints each, spread over 20 hosts, in 50 namespaces. Each host declares the ten services its workloads back,
// with ports 80 -> 8080 (http) and 9090, and no VIP: the receivers allocate it.
package scalegen

import (
	"fmt"
	"net/netip"

	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// Shape constants.
const (
	PerHost     = 10 // workloads per host
	HostsPerSvc = 20 // endpoints per service, one per host of a group
	Namespaces  = 50
	// Domain is the DNS domain of the services' hostnames.
	Domain = "mesh.example"
)

// Hosts is the number of hosts of a mesh of n workloads.
func Hosts(n int) int { return n / PerHost }

// HostName is the node name of host h.
func HostName(h int) string { return fmt.Sprintf("h%05d", h) }

// Record is host h's record: its workloads, healthy unless unhealthy names the index of one that is not (-1:
// none), and the services they back.
func Record(h, unhealthy int) discovery.Record {
	r := discovery.Record{Node: HostName(h)}
	for i := range PerHost {
		w := workload(h, i)
		w.Healthy = i != unhealthy
		r.Workloads = append(r.Workloads, w)
		name, ns, host := service(h, i)
		r.Services = append(r.Services, discovery.Service{Name: name, Namespace: ns, Hostname: host,
			Ports:     []discovery.ServicePort{{Port: 80, TargetPort: 8080, AppProtocol: "http"}, {Port: 9090}},
			Workloads: []string{ns + "/" + w.Name}})
	}
	return r
}

// Input is the state input of the mesh of n workloads as gossip delivers it (origin gossip, signed), plus
// local: this host's own workloads and services.
func Input(n int, local state.Input) state.Input {
	in := local
	for h := range Hosts(n) {
		r := Record(h, -1)
		for _, w := range r.Workloads {
			c := *w
			c.UID, c.Node, c.Origin = r.Node+"/"+w.Namespace+"/"+w.Name, r.Node, state.OriginGossip
			in.Workloads = append(in.Workloads, &c)
		}
		for _, s := range r.Services {
			d := state.ServiceDecl{Node: r.Node, Name: s.Name, Namespace: s.Namespace, Hostname: s.Hostname,
				Origin: state.OriginGossip}
			for _, p := range s.Ports {
				d.Ports = append(d.Ports, state.ServicePort{Port: p.Port, TargetPort: max(p.TargetPort, p.Port),
					AppProtocol: p.AppProtocol})
			}
			for _, w := range s.Workloads {
				d.Workloads = append(d.Workloads, r.Node+"/"+w)
			}
			in.Services = append(in.Services, d)
		}
	}
	return in
}

// Address is the IPv4 address of workload i of host h (in 10.0.0.0/8; hosts up to 100,000).
func Address(h, i int) netip.Addr {
	g := h*PerHost + i + 1
	return netip.AddrFrom4([4]byte{10, byte(g >> 16), byte(g >> 8), byte(g)})
}

// ServiceHostname is the hostname of the service that workload i of host h backs.
func ServiceHostname(h, i int) string {
	_, _, host := service(h, i)
	return host
}

func workload(h, i int) *state.Workload {
	_, ns, _ := service(h, i)
	g := h*PerHost + i + 1
	v6 := netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(g >> 24), byte(g >> 16), byte(g >> 8), byte(g)})
	return &state.Workload{
		Name:           fmt.Sprintf("w%05d-%d", h, i),
		Namespace:      ns,
		ServiceAccount: fmt.Sprintf("sa-%d", i),
		TrustDomain:    "cluster.local",
		Addresses:      []netip.Addr{Address(h, i), v6},
		Tunnel:         state.TunnelHBONE,
		Labels: map[string]string{"app": fmt.Sprintf("app-%d", i), "version": "v1", "tier": "backend",
			"team": fmt.Sprintf("team-%d", h%7)},
		Ports:    []uint16{8080, 9090},
		Healthy:  true,
		Capacity: 1,
	}
}

// service names the service that workload i of host h backs: one per workload index and group of hosts.
func service(h, i int) (name, namespace, hostname string) {
	s := (h/HostsPerSvc)*PerHost + i
	name, namespace = fmt.Sprintf("svc-%d", s), fmt.Sprintf("ns-%d", s%Namespaces)
	return name, namespace, name + "." + namespace + "." + Domain
}
