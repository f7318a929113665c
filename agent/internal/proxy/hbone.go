package proxy

import (
	"context"
	"crypto/tls"
	"net"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
)

// HBONEClient opens tunnels through the hbone pool with the local workloads'
// certificates.
type HBONEClient struct {
	Pool *hbone.Pool
	IDs  identity.Source
}

// DialTunnel opens one HBONE stream for t.
func (c *HBONEClient) DialTunnel(ctx context.Context, t hbone.Tunnel) (net.Conn, error) {
	if c.IDs == nil {
		return nil, &RouteError{Route: Route{Kind: RouteDrop, Reason: "this host holds no identity"}}
	}
	s, err := c.Pool.Dial(ctx, t)
	if err != nil {
		return nil, tunnelError{err}
	}
	return s, nil
}

// DialDouble opens a double-HBONE tunnel: outer to another network's gateway, inner to the destination's node.
func (c *HBONEClient) DialDouble(ctx context.Context, outer, inner hbone.Tunnel, network string) (net.Conn, error) {
	if c.IDs == nil {
		return nil, &RouteError{Route: Route{Kind: RouteDrop, Reason: "this host holds no identity"}}
	}
	s, err := c.Pool.DialDouble(ctx, outer, inner, network)
	if err != nil {
		return nil, tunnelError{err}
	}
	return s, nil
}

// ClientTLS is the pool's TLS configuration of a tunnel: its source's
// certificate, its SNI, the peer's identity checked against Expected.
func ClientTLS(ids identity.Source) func(t *hbone.Tunnel) (*tls.Config, error) {
	return func(t *hbone.Tunnel) (*tls.Config, error) {
		cfg := identity.ClientTLSConfig(ids, t.Source, t.Expected)
		cfg.ServerName = t.ServerName
		return cfg, nil
	}
}

// tunnelError carries hbone's failure flag as an Istio response flag.
type tunnelError struct{ err error }

func (e tunnelError) Error() string                { return e.err.Error() }
func (e tunnelError) Unwrap() error                { return e.err }
func (e tunnelError) ResponseFlag() telemetry.Flag { return istioFlag(hbone.FlagOf(e.err)) }

// istioFlag maps hbone's failure vocabulary onto Istio's response flags.
func istioFlag(f hbone.Flag) telemetry.Flag {
	switch f {
	case hbone.FlagNone:
		return telemetry.FlagNone
	case hbone.FlagDenied, hbone.FlagRevoked:
		return telemetry.FlagDeny
	case hbone.FlagTLS:
		return telemetry.FlagTLSFailure
	}
	// Everything else (a failed dial, an upstream that did not answer, a reset,
	// a refused request) is a connection that could not be made: Istio's
	// vocabulary is closed, and hbone's own names never become label values.
	return telemetry.FlagConnect
}

func baggage(w *state.Workload) hbone.Baggage {
	if w == nil {
		return hbone.Baggage{}
	}
	l := labelsOf(w)
	return hbone.Baggage{ClusterName: l.cluster, Namespace: l.namespace, WorkloadName: l.name, ServiceName: l.service,
		ServiceVersion: l.revision, Region: l.region, AvailabilityZone: l.zone}
}
