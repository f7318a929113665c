package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/ambient-agent/ambient-agent/agent/internal/hbone"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// A local process that connects straight to a per-workload outbound port
// (15101+), or to any loopback address, is not redirected (capture leaves lo
// alone), so its original destination is the port itself: carrying it would
// make the agent dial itself, again and again, until file descriptors run out.
func TestLoopbackDestinationIsDropped(t *testing.T) {
	snap := testSnapshot()
	for _, dst := range []string{"127.0.0.1:15101", "[::1]:15102", "127.0.0.1:15001", "127.0.0.2:8080"} {
		if r := DecideOutbound(snap, ap("127.0.0.1:40000"), ap(dst)); r.Kind != RouteDrop {
			t.Errorf("%s: route %s, want drop (the agent's own per-workload outbound port)", dst, r.Kind)
		}
	}
}

type recordTunnels struct{ got []hbone.Tunnel }

func (r *recordTunnels) DialTunnel(_ context.Context, t hbone.Tunnel) (net.Conn, error) {
	r.got = append(r.got, t)
	return nil, errors.New("recorded")
}

// A service-account waypoint a service is bound to forwards it only to the
// endpoints in its scope (its account's): the service's declaration never
// takes the waypoint's identity to another account's workload.
func TestWaypointForwardsOnlyToWhatItManages(t *testing.T) {
	sa := wp("sa-wp", "reviews", "10.0.0.51")
	sa.Local = true
	mk := func(uid, sa string, healthy bool, addr string) *state.Workload {
		return &state.Workload{UID: uid, Name: uid, Namespace: "default", ServiceAccount: sa, TrustDomain: "cluster.local",
			Addresses: []netip.Addr{netip.MustParseAddr(addr)}, Tunnel: state.TunnelHBONE, Healthy: healthy, Capacity: 1,
			UseWaypoint: map[string]string{"reviews": "sa-wp"}[sa]}
	}
	for _, managedHealthy := range []bool{false, true} {
		snap := state.Build(1, state.Input{
			Workloads: []*state.Workload{
				mk("managed", "reviews", managedHealthy, "10.0.0.11"), // the waypoint's
				mk("unmanaged", "ratings", true, "10.0.0.12"),
			},
			Services: []state.ServiceDecl{{Node: "n", Name: "mixed", Namespace: "default", Hostname: "mixed.default.svc.cluster.local",
				VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.7")}, Ports: []state.ServicePort{{Port: 80, TargetPort: 8080}},
				Workloads: []string{"managed", "unmanaged"}, Origin: state.OriginConfig, UseWaypoint: "sa-wp"}},
			Waypoints: []*state.Waypoint{sa},
		})
		wt, err := managedTarget(snap, sa, ap("10.96.0.7:80"))
		if err != nil {
			t.Fatalf("a service bound to the waypoint was refused: %v", err)
		}
		for range 20 {
			rec := &recordTunnels{}
			h := &InboundHBONE{d: &Deps{Tunnels: rec, Dialer: &net.Dialer{}}}
			_, w, _ := h.forward(context.Background(), snap, wt, ap("10.96.0.7:80"), ap("192.0.2.1:1"))
			switch {
			case w != nil && w.UID == "unmanaged":
				t.Fatalf("waypoint %s forwarded to %s, which it does not manage, as %v", sa.Key(), w.UID, rec.got)
			case managedHealthy && (w == nil || w.UID != "managed"):
				t.Fatalf("healthy managed endpoint: forwarded to %v, want managed", w)
			case !managedHealthy && w != nil:
				t.Fatalf("no healthy managed endpoint: forwarded to %s, want a failure", w.UID)
			}
		}
	}
}

// On an address two workloads share by port, the waypoint resolves the target
// by its port: it manages bob's port, not alice's, and reaches bob with his
// SNI and identity.
func TestWaypointTargetOnSharedAddress(t *testing.T) {
	sa := wp("bob-wp", "bob", "10.0.0.51")
	sa.Local = true
	mk := func(name string, port uint16) *state.Workload {
		return &state.Workload{UID: "h1/default/" + name, Name: name, Namespace: "default", ServiceAccount: name,
			TrustDomain: "cluster.local", Node: "h1", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.20")},
			Ports: []uint16{port}, Tunnel: state.TunnelHBONE, Healthy: true, Capacity: 1, UseWaypoint: name + "-wp"}
	}
	snap := state.Build(1, state.Input{
		Workloads: []*state.Workload{mk("alice", 8080), mk("bob", 9090)},
		Waypoints: []*state.Waypoint{sa},
	})
	if _, err := managedTarget(snap, sa, ap("10.0.0.20:8080")); err == nil {
		t.Error("alice's port accepted by bob's waypoint")
	}
	wt, err := managedTarget(snap, sa, ap("10.0.0.20:9090"))
	if err != nil {
		t.Fatalf("bob's port refused: %v", err)
	}
	rec := &recordTunnels{}
	h := &InboundHBONE{d: &Deps{Tunnels: rec, Dialer: &net.Dialer{}}}
	if _, w, _ := h.forward(context.Background(), snap, wt, ap("10.0.0.20:9090"), ap("192.0.2.1:1")); w == nil || w.Name != "bob" {
		t.Fatalf("forwarded to %v, want bob", w)
	}
	if len(rec.got) != 1 || rec.got[0].ServerName != "bob.default.workload.ambient-agent" ||
		rec.got[0].Expected[0].String() != "spiffe://cluster.local/ns/default/sa/bob" {
		t.Errorf("tunnel %+v: want bob's SNI and identity", rec.got)
	}
}
