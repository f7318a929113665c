package state

import (
	"net/netip"
	"testing"
)

// A workload that loses an address conflict takes none of its ports: here a
// gossiped plaintext (NONE) workload declares port 80 on a local workload's
// address, which would otherwise refuse inbound to it and send peers there in
// plaintext instead of HBONE.
func TestConflictLoserTakesNoPorts(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.5")
	local := &Workload{UID: "n1/default/web", Name: "web", Namespace: "default", Node: "n1", Local: true,
		Tunnel: TunnelHBONE, Addresses: []netip.Addr{a}}
	thief := &Workload{UID: "n2/default/web", Name: "web", Namespace: "default", Node: "n2",
		Tunnel: TunnelNone, Addresses: []netip.Addr{a}, Ports: []uint16{80}}
	s := NewSnapshot(1, []*Workload{local, thief})
	if w, _ := s.WorkloadByAddr(a); w != local {
		t.Fatalf("conflict winner is %v, want the local workload", w.UID)
	}
	if w, ok := s.LocalFor(netip.AddrPortFrom(a, 80)); !ok || w != local {
		t.Errorf("LocalFor(%s:80) = %v, %v: the conflict loser %s took the port", a, w, ok, thief.UID)
	}
	if cs := s.Conflicts(); len(cs) != 1 || cs[0].Winner != local.UID || cs[0].Loser != thief.UID {
		t.Errorf("conflicts = %v, want %s over %s", cs, local.UID, thief.UID)
	}
}

// Between remote workloads the smallest UID wins the address and its ports,
// whatever the later UIDs declare; the winner's node may still share it.
func TestRemoteConflictPortsFollowWinner(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.7")
	mk := func(uid, node string, tunnel TunnelProtocol, ports ...uint16) *Workload {
		return &Workload{UID: uid, Name: uid, Namespace: "default", Node: node, Tunnel: tunnel,
			Addresses: []netip.Addr{a}, Ports: ports}
	}
	owner, sibling := mk("n2/default/a", "n2", TunnelHBONE, 80), mk("n2/default/b", "n2", TunnelHBONE, 81)
	owner.Primary = true
	thief := mk("n3/default/c", "n3", TunnelNone, 80, 81, 82)
	for _, order := range [][]*Workload{{owner, sibling, thief}, {thief, sibling, owner}} {
		s := NewSnapshot(1, order)
		for port, want := range map[uint16]*Workload{80: owner, 81: sibling, 82: owner, 9999: owner} {
			if w, ok := s.WorkloadFor(netip.AddrPortFrom(a, port)); !ok || w != want {
				t.Errorf("WorkloadFor(%s:%d) = %v, want %s", a, port, w, want.UID)
			}
		}
		if cs := s.Conflicts(); len(cs) != 1 || cs[0].Loser != thief.UID {
			t.Errorf("conflicts = %v, want only %s as the loser", cs, thief.UID)
		}
	}
}

// A remote workload that names this host's node is not of it: it cannot share
// a local workload's address, even when both declare ports.
func TestRemoteNamingLocalNodeDoesNotShare(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.9")
	local := &Workload{UID: "n1/default/web", Name: "web", Namespace: "default", Node: "n1", Local: true,
		Primary: true, Tunnel: TunnelHBONE, Addresses: []netip.Addr{a}, Ports: []uint16{8080}}
	forged := &Workload{UID: "n1/default/aaa", Name: "aaa", Namespace: "default", Node: "n1",
		Tunnel: TunnelNone, Addresses: []netip.Addr{a}, Ports: []uint16{80}}
	s := NewSnapshot(1, []*Workload{local, forged})
	if w, ok := s.WorkloadFor(netip.AddrPortFrom(a, 80)); !ok || w != local {
		t.Errorf("WorkloadFor(%s:80) = %v, want the local workload", a, w)
	}
	if len(s.Conflicts()) != 1 {
		t.Errorf("conflicts = %v, want the forged workload reported", s.Conflicts())
	}
}
