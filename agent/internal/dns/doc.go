// Package dns is the agent's DNS proxy for its host: it answers the mesh's
// service hostnames (reviews.default.svc.cluster.local, or reviews under the
// search domains) with their VIPs, and forwards every other query unchanged to
// the host's own DNS servers, so that a process on the host resolves mesh names
// without any change of its own.
//
// The proxy serves UDP and TCP on loopback addresses (127.0.0.1:15053 by default).
// Queries reach it through the DNS capture table (package capture, fail-open) or
// through systemd-resolved configuration; docs/dns.md has both. Upstream servers
// are given, or read from resolv.conf, re-read when it changes. The proxy's own
// upstream sockets carry the agent's mark (Options.Control), so that the capture
// lets them through instead of sending them back to the proxy.
//
// Mesh names come from the caller through Lookup, which reads the caller's
// current state; dns keeps no copy of it. dns imports no package of the agent:
// it must not import state, proxy or anything above them (tests/archtest).
package dns
