package app

import (
	"context"
	"net/netip"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/health"
)

// newHealth builds the checker of the local workloads' health checks. A
// status change republishes this host's record and the local state, so
// an unhealthy endpoint leaves every agent's rotation.
func (a *App) newHealth(cfg *config.Config) error {
	a.health = health.New(markedDialer(cfg.Capture).DialContext, a.log.With("component", "health"), a.healthChanged)
	return a.health.Set(healthChecks(cfg))
}

// healthChanged publishes a local workload's new health: to this host's mesh
// state and to its peers.
func (a *App) healthChanged(workload string, s health.Status) {
	a.log.Info("workload health changed", "workload", workload, "healthy", s.Healthy, "last_error", s.LastError)
	a.metrics.HealthChanges.WithLabelValues(healthWord(s.Healthy)).Inc()
	cur := a.cfg.Load()
	a.publishState()
	a.republishGossip(cur)
}

// healthChecks are the checks the configuration declares, keyed by
// "namespace/name" of their workload; a check dials the workload's first address.
func healthChecks(cfg *config.Config) map[string]health.Check {
	checks := map[string]health.Check{}
	for _, w := range cfg.Workloads {
		h := w.Health
		if h == nil || len(w.Addresses) == 0 {
			continue
		}
		checks[w.Namespace+"/"+w.Name] = health.Check{
			Kind:               health.Kind(h.Kind),
			Target:             netip.AddrPortFrom(w.Addresses[0], h.Port),
			Path:               h.Path,
			Interval:           h.Interval,
			Timeout:            h.Timeout,
			UnhealthyThreshold: h.UnhealthyThreshold,
			HealthyThreshold:   h.HealthyThreshold,
		}
	}
	return checks
}

// healthy is the last known health of a local workload; one without a check is healthy.
func (a *App) healthy(name, namespace string) bool {
	if a.health == nil {
		return true
	}
	s, ok := a.health.Status(namespace + "/" + name)
	return !ok || s.Healthy
}

func (a *App) runHealth(ctx context.Context) error { return a.health.Run(ctx) }

func healthWord(ok bool) string {
	if ok {
		return "healthy"
	}
	return "unhealthy"
}
