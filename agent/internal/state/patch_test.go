package state

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// patchMesh is a mesh with what patches must carry through: services across nodes, local workloads and a local
// endpoint, a contested address and a lost claim, a waypoint binding, an unproven gossip workload.
type patchMesh struct {
	nodes map[string][]*Workload
	local []*Workload
	decls []ServiceDecl
}

func newPatchMesh() *patchMesh {
	m := &patchMesh{nodes: map[string][]*Workload{}}
	web := &Workload{UID: "local/default/web", Name: "web", Namespace: "default", ServiceAccount: "web",
		TrustDomain: "cluster.local", Addresses: []netip.Addr{netip.MustParseAddr("192.168.1.1")}, Tunnel: TunnelHBONE,
		Healthy: true, Capacity: 1, Local: true, Origin: OriginConfig, Node: "local"}
	m.local = []*Workload{web}
	m.decls = append(m.decls, ServiceDecl{Node: "local", Local: true, Name: "svc-0", Namespace: "ns-0",
		Hostname: "svc-0.ns-0.mesh.example", Ports: []ServicePort{{Port: 80, TargetPort: 8080}}, Workloads: []string{web.UID},
		Origin: OriginConfig})
	for n := range 12 {
		node := fmt.Sprintf("n%02d", n)
		for i := range 4 {
			ns := fmt.Sprintf("ns-%d", i)
			w := &Workload{UID: fmt.Sprintf("%s/%s/w%d", node, ns, i), Name: fmt.Sprintf("w%d", i), Namespace: ns,
				ServiceAccount: fmt.Sprintf("sa-%d", i), TrustDomain: "cluster.local", Node: node, Tunnel: TunnelHBONE,
				Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(n), byte(i + 1)})}, Ports: []uint16{8080},
				Healthy: true, Capacity: 1, Origin: OriginGossip, AddressProven: true, Labels: map[string]string{"app": "a"}}
			switch {
			case n == 3 && i == 0: // claims n02's address: loses it
				w.Addresses = []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 2, 1})}
				w.AddressProven = false
			case n == 5 && i == 1:
				w.Origin = OriginUnsigned
			}
			m.nodes[node] = append(m.nodes[node], w)
			m.decls = append(m.decls, ServiceDecl{Node: node, Name: fmt.Sprintf("svc-%d", i), Namespace: ns,
				Hostname: fmt.Sprintf("svc-%d.%s.mesh.example", i, ns), Ports: []ServicePort{{Port: 80, TargetPort: 8080}},
				Workloads: []string{w.UID}, Origin: w.Origin})
		}
	}
	return m
}

func (m *patchMesh) input(prev *Snapshot) Input {
	in := Input{Workloads: slices.Clone(m.local), Services: m.decls, Previous: prev,
		Limits: Limits{Domains: []string{"mesh.example"}}}
	for _, ws := range m.nodes {
		in.Workloads = append(in.Workloads, ws...)
	}
	in.Waypoints = []*Waypoint{{Name: "wp", Namespace: "ns-1", ServiceAccount: "wp", TrustDomain: "cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("10.9.9.9")}, Node: "n11", Origin: OriginGossip}}
	return in
}

// digest is everything a reader of the snapshot can see, through its lookups.
func digest(t *testing.T, s *Snapshot) string {
	t.Helper()
	var b strings.Builder
	put := func(v any) {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	for _, w := range s.Workloads() {
		put(w)
		for _, a := range w.Addresses {
			if o, ok := s.WorkloadByAddr(a); ok {
				put(o)
			}
			for _, p := range w.Ports {
				if o, ok := s.WorkloadFor(netip.AddrPortFrom(a, p)); ok {
					put(o)
				}
			}
		}
		if o, ok := s.WorkloadByUID(w.UID); ok {
			put(o)
		}
		put(s.WaypointOf(w))
	}
	svcDigest := func(svc *Service) {
		put(svc)
		for _, e := range svc.Endpoints {
			put(e.Workload)
		}
	}
	for _, svc := range s.Services() {
		svcDigest(svc)
		for _, a := range svc.Addresses {
			if o, ok := s.ServiceByVIP(a); ok {
				svcDigest(o)
			}
		}
		if o, ok := s.ServiceByHostname(svc.Hostname); ok {
			svcDigest(o)
		}
		if o, ok := s.ServiceByKey(svc.Key()); ok {
			svcDigest(o)
		}
	}
	for _, w := range s.Local() {
		for _, svc := range s.BackedBy(w) {
			svcDigest(svc)
		}
	}
	put(s.Conflicts())
	put(s.ServiceConflicts())
	return b.String()
}

// Patched snapshots read exactly as snapshots built from the same input do, through many patches in a row.
func TestPatchReadsAsBuild(t *testing.T) {
	m := newPatchMesh()
	cur := Build(1, m.input(nil))
	if len(cur.Conflicts()) == 0 {
		t.Fatal("the mesh has no conflict: the test would not see one carried through")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	patched := 0
	for v := uint64(2); v < 300; v++ {
		node := fmt.Sprintf("n%02d", rng.IntN(12))
		ws := make([]*Workload, len(m.nodes[node]))
		for i, w := range m.nodes[node] {
			c := *w
			switch rng.IntN(5) {
			case 0:
				c.Healthy = !c.Healthy
			case 1:
				c.Capacity = uint32(rng.IntN(3))
			case 2:
				c.Labels = map[string]string{"app": "a", "v": fmt.Sprint(v)}
			case 3:
				c.UseWaypoint = []string{"", "wp"}[rng.IntN(2)]
			}
			ws[i] = &c
		}
		m.nodes[node] = ws
		next, ok := cur.Patch(v, map[string][]*Workload{node: ws})
		if !ok {
			t.Fatalf("version %d: an attribute change of %s was not patched", v, node)
		}
		built := Build(v, m.input(cur))
		if got, want := digest(t, next), digest(t, built); got != want {
			t.Fatalf("version %d: the patched snapshot reads differently from the built one:\npatched:\n%s\nbuilt:\n%s", v, got, want)
		}
		if next.Version() != v {
			t.Fatalf("version %d, want %d", next.Version(), v)
		}
		patched++
		if rng.IntN(40) == 0 { // now and then a rebuild, as the caller does when an overlay is full
			next = built
		}
		cur = next
	}
	t.Logf("%d patches read as builds", patched)
}

// Anything a contest reads is not a patch.
func TestPatchRefusesClaims(t *testing.T) {
	m := newPatchMesh()
	cur := Build(1, m.input(nil))
	for name, change := range map[string]func(w *Workload){
		"address":  func(w *Workload) { w.Addresses = []netip.Addr{netip.MustParseAddr("10.1.1.1")} },
		"ports":    func(w *Workload) { w.Ports = []uint16{9090} },
		"identity": func(w *Workload) { w.ServiceAccount = "other" },
		"tunnel":   func(w *Workload) { w.Tunnel = TunnelNone },
		"origin":   func(w *Workload) { w.Origin = OriginUnsigned },
		"proof":    func(w *Workload) { w.AddressProven = false },
		"network":  func(w *Workload) { w.Network = "other" },
	} {
		ws := slices.Clone(m.nodes["n04"])
		c := *ws[1]
		change(&c)
		ws[1] = &c
		if _, ok := cur.Patch(2, map[string][]*Workload{"n04": ws}); ok {
			t.Errorf("a change of %s was patched", name)
		}
	}
	if _, ok := cur.Patch(2, map[string][]*Workload{"n04": m.nodes["n04"][:3]}); ok {
		t.Error("a workload gone was patched")
	}
	extra := *m.nodes["n04"][0]
	extra.UID, extra.Name = "n04/ns-0/new", "new"
	if _, ok := cur.Patch(2, map[string][]*Workload{"n04": append(slices.Clone(m.nodes["n04"]), &extra)}); ok {
		t.Error("a new workload was patched")
	}
	twice := slices.Clone(m.nodes["n04"])
	twice[3] = twice[2] // as many workloads, one of them twice and one missing
	if _, ok := cur.Patch(2, map[string][]*Workload{"n04": twice}); ok {
		t.Error("a workload listed twice in place of another was patched")
	}
	if _, ok := cur.Patch(2, map[string][]*Workload{"n05": m.nodes["n04"]}); ok {
		t.Error("another node's workloads were patched in")
	}
	if _, ok := cur.Patch(2, map[string][]*Workload{"n99": m.nodes["n04"]}); ok {
		t.Error("a new node was patched")
	}
	// The overlay is bounded: past maxOverlay workloads the caller builds.
	big := &Snapshot{nodeCount: map[string]int{}, byUID: map[string]*Workload{}, over: &overlay{workloads: map[string]*Workload{}}}
	for i := range maxOverlay {
		big.over.workloads[fmt.Sprint(i)] = &Workload{}
	}
	w := *m.nodes["n04"][0]
	big.nodeCount["n04"], big.byUID[w.UID] = 1, m.nodes["n04"][0]
	w.Healthy = false
	if _, ok := big.Patch(2, map[string][]*Workload{"n04": {&w}}); ok {
		t.Error("an overlay past its bound grew")
	}
}
