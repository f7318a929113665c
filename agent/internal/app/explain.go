package app

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/proxy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// ExplainResult is what `ambient-agent explain` reports: what this agent would do now with a connection from a
// local workload to a destination, and what authorization would decide of it, with the reasons.
type ExplainResult struct {
	From           string `json:"from"`           // the local workload, "namespace/name" ("" for none)
	SourceIdentity string `json:"sourceIdentity"` // what it presents ("" for none)
	Destination    string `json:"destination"`
	// Route is hbone, plaintext, passthrough or drop; Reason says why for a drop.
	Route  string `json:"route"`
	Reason string `json:"reason,omitempty"`
	// For HBONE: where the tunnel goes (Gateway, its :authority Target), the identities the peer may present and
	// the SNI.
	Target     string   `json:"target,omitempty"`
	Gateway    string   `json:"gateway,omitempty"`
	Expected   []string `json:"expectedIdentities,omitempty"`
	ServerName string   `json:"serverName,omitempty"`
	// The destination as the mesh knows it.
	Workload  string   `json:"workload,omitempty"` // "namespace/name"
	Node      string   `json:"node,omitempty"`
	Local     bool     `json:"local,omitempty"`
	Service   string   `json:"service,omitempty"`   // hostname, when the destination was a service VIP
	Endpoints []string `json:"endpoints,omitempty"` // the service's endpoints: one is picked per connection
	Waypoint  string   `json:"waypoint,omitempty"`  // "namespace/name"
	// Policy is what authorization decides at the destination, as this host's policy set says.
	Policy *ExplainPolicy `json:"policy,omitempty"`
	Notes  []string       `json:"notes,omitempty"`
}

// ExplainPolicy is an authorization verdict and what decided it.
type ExplainPolicy struct {
	Verdict  string `json:"verdict"` // ALLOW or DENY
	Reason   string `json:"reason"`
	Policy   string `json:"policy,omitempty"` // "namespace/name" of the deciding policy
	Rule     int    `json:"rule"`             // its rule's index, -1 for none
	AsSeenBy string `json:"sourceSeen"`       // the identity the destination sees ("" for plaintext)
	DryRun   string `json:"dryRun,omitempty"`
}

// explain runs the outbound decision the proxy makes for a captured connection, on the current snapshot, and the
// inbound authorization its destination would apply. It opens nothing.
func (a *App) explain(_ context.Context, req admin.ExplainRequest) (any, error) {
	dst, err := netip.ParseAddrPort(req.Destination)
	if err != nil {
		return nil, fmt.Errorf("destination: %q is not IP:PORT", req.Destination)
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	snap := a.state.Load()
	from, err := explainSource(snap, req.From)
	if err != nil {
		return nil, err
	}
	var src netip.AddrPort
	res := &ExplainResult{Destination: dst.String()}
	if from != nil {
		res.From = from.Namespace + "/" + from.Name
		if id, err := from.Identity(); err == nil {
			res.SourceIdentity = id.String()
		}
		if len(from.Addresses) > 0 {
			src = netip.AddrPortFrom(from.Addresses[0], 0)
		}
	}
	r := proxy.DecideOutboundFrom(snap, from, src, dst)
	res.Route, res.Reason = r.Kind.String(), r.Reason
	if r.Kind == proxy.RouteHBONE {
		res.Target, res.Gateway, res.ServerName = r.Target.String(), r.Gateway.String(), r.ServerName
		for _, id := range r.Expected {
			res.Expected = append(res.Expected, id.String())
		}
		if r.Hostname != "" {
			res.Notes = append(res.Notes, "the destination is known by hostname "+r.Hostname+": its address is resolved when a connection is made")
		}
	} else if r.Kind == proxy.RoutePlain {
		res.Target = r.Target.String()
	}
	if w := r.Dest; w != nil {
		res.Workload, res.Node, res.Local = w.Namespace+"/"+w.Name, w.Node, w.Local
	}
	if svc := r.Service; svc != nil {
		res.Service = svc.Hostname
		for _, ep := range svc.Endpoints {
			desc := ep.UID
			if ep.Workload != nil {
				desc = ep.Workload.Namespace + "/" + ep.Workload.Name
				if len(ep.Workload.Addresses) > 0 {
					desc += " " + ep.Workload.Addresses[0].String()
				}
				if !ep.Workload.Healthy {
					desc += " (unhealthy: not picked)"
				}
			}
			if tp, ok := ep.TargetPort(dst.Port()); ok {
				desc += " port " + strconv.Itoa(int(tp))
			}
			res.Endpoints = append(res.Endpoints, desc)
		}
		if len(svc.Endpoints) > 1 {
			res.Notes = append(res.Notes, "each connection to the service picks one endpoint at random, weighted by capacity: the route above is one such pick")
		}
	}
	if wp := r.Waypoint; wp != nil {
		res.Waypoint = wp.Namespace + "/" + wp.Name
	}
	res.Policy = a.explainPolicy(r, from, src, res)
	return res, nil
}

// explainPolicy evaluates the connection the destination would receive against this host's policy set: from the
// waypoint when the route goes through one (the destination sees the waypoint's identity), else from the source.
func (a *App) explainPolicy(r proxy.Route, from *state.Workload, src netip.AddrPort, res *ExplainResult) *ExplainPolicy {
	w := r.Dest
	if w == nil || (r.Kind != proxy.RouteHBONE && r.Kind != proxy.RoutePlain) {
		return nil
	}
	var peer spiffeid.ID
	if r.Kind == proxy.RouteHBONE && from != nil {
		peer = r.Source
	}
	if wp := r.Waypoint; wp != nil {
		if id, err := wp.Identity(); err == nil {
			peer = id
		}
		res.Notes = append(res.Notes, "the connection goes through waypoint "+res.Waypoint+
			": the destination sees the waypoint's identity, and policies bound to the waypoint are enforced there")
	}
	dst := r.Target
	if len(w.Addresses) > 0 && r.Service != nil {
		dst = netip.AddrPortFrom(w.Addresses[0], r.Target.Port())
	}
	c := policy.Conn{DestNamespace: w.Namespace, DestLabels: w.Labels, DestIP: dst.Addr(), DestPort: dst.Port(),
		SourceIdentity: peer, SourceIP: src.Addr(), BoundPolicies: w.AuthorizationPolicies}
	set := a.policies.Load()
	if set == nil {
		set = &policy.Set{}
	}
	dec := set.Evaluate(c)
	p := &ExplainPolicy{Verdict: "DENY", Reason: string(dec.Reason), Policy: dec.Policy, Rule: dec.Rule}
	if dec.Allow {
		p.Verdict = "ALLOW"
	}
	if !peer.IsZero() {
		p.AsSeenBy = peer.String()
	}
	if dec.DryRun != nil {
		p.DryRun = dec.DryRun.String()
	}
	if !w.Local {
		res.Notes = append(res.Notes, "the verdict is this host's policy set applied to the destination; its own agent enforces what it holds")
	}
	return p
}

// explainSource is the local workload named by from ("name", "namespace/name" or its SPIFFE ID; "" the first).
func explainSource(snap *state.Snapshot, from string) (*state.Workload, error) {
	local := snap.Local()
	if from == "" {
		if len(local) == 0 {
			return nil, nil // no local workload: nothing to present, as an unrecognised process on such a host
		}
		return local[0], nil
	}
	var found []*state.Workload
	for _, w := range local {
		id, _ := w.Identity()
		if from == w.Name || from == w.Namespace+"/"+w.Name || from == id.String() {
			found = append(found, w)
		}
	}
	switch len(found) {
	case 0:
		return nil, errors.New("from: " + strconv.Quote(from) + " is not a local workload (name, namespace/name or SPIFFE ID)")
	case 1:
		return found[0], nil
	}
	return nil, errors.New("from: " + strconv.Quote(from) + " names several local workloads: give namespace/name")
}
