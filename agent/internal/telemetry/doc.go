// Package telemetry defines what the agent reports: Istio's L4 connection
// metrics (the istio_tcp_* names and labels ztunnel exports, so existing
// Grafana and Kiali dashboards work on host traffic), the agent's own metrics
// (certificates, gossip, policy, DNS) and the access log, one line per
// connection at close.
//
// Everything lives on a registry the caller owns; there are no globals. It is a
// leaf: it imports nothing of the agent, callers translate their types into
// ConnLabels.
package telemetry
