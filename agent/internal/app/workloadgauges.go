package app

import (
	"github.com/prometheus/client_golang/prometheus"
)

// registerWorkloadGauges exports ztunnel's workload-manager gauges, which Istio's ztunnel dashboard charts: the
// local workloads this agent proxies with a certificate in hand (active) and those still waiting for one
// (pending; it should converge to zero). Read at scrape time from the current snapshot and certificates.
func (a *App) registerWorkloadGauges() {
	count := func(active bool) func() float64 {
		return func() float64 {
			snap := a.state.Load()
			if snap == nil {
				return 0
			}
			n := 0
			for _, w := range snap.Local() {
				held := false
				if a.ids != nil {
					if id, err := w.Identity(); err == nil {
						_, held = a.ids.Snapshot().Certificate(id)
					}
				}
				if held == active {
					n++
				}
			}
			return float64(n)
		}
	}
	a.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "workload_manager_active_proxy_count",
			Help: "The local workloads the agent proxies with a certificate in hand (as ztunnel's)."}, count(true)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "workload_manager_pending_proxy_count",
			Help: "The local workloads still waiting for a certificate (as ztunnel's; converges to zero)."}, count(false)),
	)
}
