// Package health runs the agent's checks of its own local workloads: a TCP
// connect or an HTTP GET per workload, on a fixed interval, turning a workload
// unhealthy after UnhealthyThreshold consecutive failures and healthy again
// after HealthyThreshold consecutive successes. The caller publishes the
// result (via gossip) so that peers take unhealthy endpoints out of rotation.
//
// Stated time. A workload that starts failing at time t is reported unhealthy
// by
//
//	t + Interval*UnhealthyThreshold + Timeout
//
// (the next check starts at most one Interval after t, the threshold's last
// check starts (UnhealthyThreshold-1) Intervals later and ends within Timeout);
// Check.DetectionBound returns it. Recovery is bounded the same way with
// HealthyThreshold (Check.RecoveryBound). Both count from this host's agent;
// how fast peers learn of it is the gossip layer's bound, added on top.
//
// New workloads start healthy, so a booting host's endpoints are usable at
// once, the way Kubernetes treats pods without a readiness probe; their first
// check runs immediately.
//
// Checks dial through the caller's dial function, which carries the socket
// mark that keeps the agent's own connections out of traffic capture.
//
// health imports only the standard library; it knows nothing of gossip,
// configuration files or the proxy.
package health
