package proxy

import (
	"net/netip"
	"testing"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

func testSnapshot() *state.Snapshot {
	mk := func(uid, sa string, local bool, tunnel state.TunnelProtocol, addr string) *state.Workload {
		return &state.Workload{UID: uid, Name: uid, Namespace: "default", ServiceAccount: sa, TrustDomain: "cluster.local",
			Addresses: []netip.Addr{netip.MustParseAddr(addr)}, Tunnel: tunnel, Local: local}
	}
	return state.NewSnapshot(1, []*state.Workload{
		mk("local-a", "a", true, state.TunnelHBONE, "10.0.0.1"),
		mk("local-b", "b", true, state.TunnelHBONE, "10.0.0.2"),
		mk("remote", "r", false, state.TunnelHBONE, "10.0.0.9"),
		mk("plain", "p", false, state.TunnelNone, "10.0.0.8"),
	})
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestDecideOutbound(t *testing.T) {
	snap := testSnapshot()
	cases := []struct {
		name, src, dst string
		kind           RouteKind
		source         string
		gateway        string
	}{
		{"hbone to a captured workload", "10.0.0.1:5000", "10.0.0.9:8080", RouteHBONE, "spiffe://cluster.local/ns/default/sa/a", "10.0.0.9:15008"},
		{"source identity by source address", "10.0.0.2:5000", "10.0.0.9:8080", RouteHBONE, "spiffe://cluster.local/ns/default/sa/b", "10.0.0.9:15008"},
		{"unknown source address uses the first local workload", "192.168.1.1:5000", "10.0.0.9:80", RouteHBONE, "spiffe://cluster.local/ns/default/sa/a", "10.0.0.9:15008"},
		{"plaintext to a non-HBONE workload", "10.0.0.1:5000", "10.0.0.8:80", RoutePlain, "", ""},
		{"passthrough to an unknown address", "10.0.0.1:5000", "93.184.216.34:443", RoutePassthrough, "", ""},
		{"drop loopback agent port", "127.0.0.1:5000", "127.0.0.1:15001", RouteDrop, "", ""},
		{"v4-mapped destination", "10.0.0.1:5000", "[::ffff:10.0.0.9]:8080", RouteHBONE, "spiffe://cluster.local/ns/default/sa/a", "10.0.0.9:15008"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := DecideOutbound(snap, ap(tc.src), ap(tc.dst))
			if r.Kind != tc.kind {
				t.Fatalf("kind = %s, want %s (%s)", r.Kind, tc.kind, r.Reason)
			}
			if tc.kind != RouteHBONE {
				return
			}
			if r.Source.String() != tc.source || r.Gateway.String() != tc.gateway ||
				len(r.Expected) != 1 || r.Expected[0].String() != "spiffe://cluster.local/ns/default/sa/r" {
				t.Errorf("route = %+v", r)
			}
		})
	}
}

func TestNoLocalIdentityNeverPlaintext(t *testing.T) {
	snap := state.NewSnapshot(1, []*state.Workload{{UID: "r", Namespace: "default", ServiceAccount: "r",
		TrustDomain: "cluster.local", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.9")}, Tunnel: state.TunnelHBONE}})
	if r := DecideOutbound(snap, ap("10.0.0.1:1"), ap("10.0.0.9:80")); r.Kind != RouteDrop {
		t.Fatalf("HBONE destination without a local identity: %s, want drop", r.Kind)
	}
}
