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
	for _, r := range cfg.Remotes {
		tunnel := TunnelHBONE
		if r.Tunnel == config.TunnelNone {
			tunnel = TunnelNone
		}
		node := r.Node
		if node == "" {
			node = "static"
		}
		out = append(out, workload(cfg, r.Workload, node, tunnel, false))
	}
	return out
}

func workload(cfg *config.Config, w config.Workload, node string, tunnel TunnelProtocol, local bool) *Workload {
	return &Workload{
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
		Capacity:       1,
		Local:          local,
	}
}
