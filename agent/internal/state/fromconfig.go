package state

import (
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

// FromConfig builds the workloads a configuration declares: the host's own and
// the statically declared remote ones.
func FromConfig(cfg *config.Config) []*Workload {
	out := make([]*Workload, 0, len(cfg.Workloads)+len(cfg.Remotes))
	for _, w := range cfg.Workloads {
		out = append(out, workload(cfg, w, cfg.Node.Name, TunnelHBONE, true))
	}
	MarkPrimaries(out)
	for _, r := range cfg.Remotes {
		tunnel := TunnelHBONE
		if r.Tunnel == config.TunnelNone {
			tunnel = TunnelNone
		}
		node := r.Node
		if node == "" {
			node = config.StaticNodeName
		}
		out = append(out, workload(cfg, r.Workload, node, tunnel, false))
	}
	return out
}

func workload(cfg *config.Config, w config.Workload, node string, tunnel TunnelProtocol, local bool) *Workload {
	var loc Locality
	if local {
		loc = ParseLocality(cfg.Node.Locality)
	}
	return &Workload{
		Locality:       loc,
		UID:            node + "/" + w.Namespace + "/" + w.Name,
		Name:           w.Name,
		Namespace:      w.Namespace,
		ServiceAccount: w.ServiceAccount,
		TrustDomain:    cfg.Node.TrustDomain,
		Addresses:      w.Addresses,
		Network:        cfg.Node.Network,
		ClusterID:      cfg.Node.ClusterID,
		Node:           node,
		Tunnel:         tunnel,
		Labels:         w.Labels,
		Healthy:        true,
		Capacity:       max(w.Capacity, 1),
		UseWaypoint:    w.UseWaypoint,
		Ports:          w.Ports,
		Local:          local,
		Origin:         OriginConfig,
	}
}

// InputFromConfig is what a configuration declares: its workloads, the
// services the local workloads back, and this host's waypoint.
func InputFromConfig(cfg *config.Config) Input {
	return Input{Workloads: FromConfig(cfg), Services: ServicesFromConfig(cfg), Waypoints: WaypointsFromConfig(cfg),
		Network: cfg.Node.Network}
}

// ServicesFromConfig declares the services this host's workloads back.
func ServicesFromConfig(cfg *config.Config) []ServiceDecl {
	out := make([]ServiceDecl, 0, len(cfg.Services))
	for _, s := range cfg.Services {
		d := ServiceDecl{
			Node:            cfg.Node.Name,
			Local:           true,
			Name:            s.Name,
			Namespace:       s.Namespace,
			Hostname:        s.Hostname,
			VIPs:            s.VIPs,
			UseWaypoint:     s.UseWaypoint,
			ServiceAccounts: s.ServiceAccounts,
			Origin:          OriginConfig,
		}
		for _, p := range s.Ports {
			d.Ports = append(d.Ports, ServicePort{Port: p.Port, TargetPort: p.TargetPort, AppProtocol: p.AppProtocol})
		}
		for _, name := range s.Workloads {
			d.Workloads = append(d.Workloads, cfg.Node.Name+"/"+s.Namespace+"/"+name)
		}
		out = append(out, d)
	}
	return out
}

// WaypointsFromConfig is this host's waypoint instance, if it runs one.
func WaypointsFromConfig(cfg *config.Config) []*Waypoint {
	wp := cfg.Waypoint
	if !wp.Enabled {
		return nil
	}
	return []*Waypoint{{
		Name:              wp.Name,
		Namespace:         wp.Namespace,
		ServiceAccount:    wp.ServiceAccount,
		TrustDomain:       cfg.Node.TrustDomain,
		ForServiceAccount: wp.ForServiceAccount,
		Addresses:         wp.Addresses,
		Node:              cfg.Node.Name,
		Local:             true,
		Origin:            OriginConfig,
	}}
}
