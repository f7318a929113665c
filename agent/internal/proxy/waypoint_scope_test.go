package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

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

type recordTunnels struct{ got []Tunnel }

func (r *recordTunnels) DialTunnel(_ context.Context, t Tunnel) (net.Conn, error) {
	r.got = append(r.got, t)
	return nil, errors.New("recorded")
}

// A service-account waypoint accepts a service target because one endpoint is
// its account's (a service with no waypoint of its own), and forwards it only
// to endpoints it serves: a caller that sends VIP:port to the waypoint by hand
// never reaches another endpoint with the waypoint's identity.
func TestWaypointForwardsOnlyToWhatItManages(t *testing.T) {
	sa := wp("sa-wp", "reviews", "10.0.0.51")
	sa.Local = true
	mk := func(uid, sa string, healthy bool, addr string) *state.Workload {
		return &state.Workload{UID: uid, Name: uid, Namespace: "default", ServiceAccount: sa, TrustDomain: "cluster.local",
			Addresses: []netip.Addr{netip.MustParseAddr(addr)}, Tunnel: state.TunnelHBONE, Healthy: healthy, Capacity: 1}
	}
	for _, managedHealthy := range []bool{false, true} {
		snap := state.Build(1, state.Input{
			Workloads: []*state.Workload{
				mk("managed", "reviews", managedHealthy, "10.0.0.11"), // the waypoint's
				mk("unmanaged", "ratings", true, "10.0.0.12"),
			},
			Services: []state.ServiceDecl{{Node: "n", Name: "mixed", Namespace: "default", Hostname: "mixed.default.svc.cluster.local",
				VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.7")}, Ports: []state.ServicePort{{Port: 80, TargetPort: 8080}},
				Workloads: []string{"managed", "unmanaged"}}},
			Waypoints: []*state.Waypoint{sa},
		})
		wt, err := managedTarget(snap, sa, ap("10.96.0.7:80"))
		if err != nil {
			t.Fatalf("a service with an endpoint the waypoint serves was refused: %v", err)
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
