package state

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Snapshot is an immutable view of the mesh, indexed for the data path.
type Snapshot struct {
	version   uint64
	workloads []*Workload
	byUID     map[string]*Workload
	byAddr    map[netip.Addr]*Workload // the primary workload of each address (of this host's network)
	network   string                   // this host's network
	// offNet finds workloads of other networks by their network's address (the first by UID): telemetry's
	// source of a client that came through a gateway, never a route.
	offNet map[netAddr]*Workload
	// byAddrPort finds workloads that declare their ports (those that may share an address).
	byAddrPort map[netip.AddrPort]*Workload
	// byServerName finds local workloads by the SNI that selects them.
	byServerName map[string]*Workload
	local        []*Workload // this host's, in UID order
	conflicts    []Conflict
	contested    map[netip.Addr]bool   // addresses no claimant could be given
	unreachable  map[netip.Addr]string // Input.Unreachable
	lost         map[string]bool       // UIDs of workloads that lost a claim on one of their addresses

	services     []*Service
	svcByKey     map[string]*Service // "namespace/name"
	byVIP        map[netip.Addr]*Service
	byHostname   map[string]*Service
	localSvcs    map[string][]localEndpoint // local workload UID -> the services it backs
	ranged       []*Service                 // services with CIDR VIPs, in key order
	svcConflicts []ServiceConflict
	wps          waypointIndex
	gateways     map[string][]*NetworkGateway // network -> its east-west gateways
	gatewayAddrs map[netip.Addr]*NetworkGateway

	// Patches (patch.go): what they replaced, and what they replace by gossip node.
	over      *overlay
	nodeCount map[string]int      // gossip node -> how many of its workloads are in use
	nodeSvcs  map[string][]string // gossip node -> the keys of the services its workloads are endpoints of
	uidSvcs   map[string][]string // workload from istiod -> the keys of the services it is an endpoint of
}

// Input is what a snapshot is built from: workloads (local and learned),
// every node's service declarations, and waypoint instances.
type Input struct {
	Workloads []*Workload
	Services  []ServiceDecl
	Waypoints []*Waypoint
	// Gateways are the networks' east-west gateways.
	Gateways []*NetworkGateway
	// Previous is the snapshot in use, if any: its owners of addresses,
	// services and waypoint names are the established ones, which a newcomer
	// cannot displace (contest.go).
	Previous *Snapshot
	// Limits bound what gossip may declare.
	Limits Limits
	// Network is this host's network. Workloads of another network are known by UID alone: their addresses
	// are another network's, which may overlap this one's (Istio keys addresses by network), so they neither
	// claim nor contest an address here. "" is one flat network: every workload is on it.
	Network string
	// Unreachable are addresses of the mesh's workloads whose node failed or is cut off (gossip's, by node):
	// no workload holds them now, and a connection to one is refused rather than sent in plaintext.
	Unreachable map[netip.Addr]string
}

// Conflict records a workload that claims an address another one holds, or
// that nobody could be given. Winner is the workload the snapshot routes the
// address to, "" when it routes it to nobody (the address is contested).
type Conflict struct {
	Address netip.Addr `json:"address"`
	Winner  string     `json:"winner"`
	Loser   string     `json:"loser"`
	// Reason is why the loser lost (a contest* constant).
	Reason string `json:"reason"`
}

func (c Conflict) String() string {
	if c.Winner == "" {
		return fmt.Sprintf("address %s claimed by %s: %s; routed to no one", c.Address, c.Loser, c.Reason)
	}
	return fmt.Sprintf("address %s claimed by %s and %s: %s; using %s", c.Address, c.Winner, c.Loser, c.Reason, c.Winner)
}

// NewSnapshot indexes workloads alone. The workloads must not be changed afterwards.
func NewSnapshot(version uint64, workloads []*Workload) *Snapshot {
	return Build(version, Input{Workloads: workloads})
}

// Build indexes in. Nothing in it may be changed afterwards.
func Build(version uint64, in Input) *Snapshot {
	s := &Snapshot{version: version, network: in.Network, unreachable: in.Unreachable}
	s.indexWorkloads(in.Workloads, in.Previous, waypointAddrs(in.Waypoints), in.Limits.RequireAddressProof, in.Network)
	s.wps = newWaypointIndex(in.Waypoints, in.Previous)
	s.buildServices(in.Services, in.Previous, in.Limits)
	s.indexGateways(in.Gateways)
	s.indexNodes()
	return s
}

// dropUIDImpostors keeps the first of the workloads (sorted by UID, stronger
// source first) that share a UID and reports the others as conflicts.
func (s *Snapshot) dropUIDImpostors(ws []*Workload) []*Workload {
	out := ws[:0]
	for i, w := range ws {
		if i > 0 && ws[i-1].UID == w.UID {
			a := netip.Addr{}
			if len(w.Addresses) > 0 {
				a = w.Addresses[0]
			}
			s.conflicts = append(s.conflicts, Conflict{Address: a, Winner: w.UID + " (" + string(ws[i-1].Origin) + ")",
				Loser: w.UID + " (" + string(w.Origin) + ")", Reason: ContestUID})
			continue
		}
		out = append(out, w)
	}
	return out
}

// netAddr is an address on a network.
type netAddr struct {
	network string
	addr    netip.Addr
}

// indexOffNetwork records where workload w of another network is on its network, unless a workload before it
// in UID order is there.
func (s *Snapshot) indexOffNetwork(w *Workload) {
	for _, a := range w.Addresses {
		k := netAddr{w.Network, a.Unmap()}
		if _, taken := s.offNet[k]; taken {
			continue
		}
		if s.offNet == nil {
			s.offNet = map[netAddr]*Workload{}
		}
		s.offNet[k] = w
	}
}

// WorkloadOn finds the workload at address a of network: this host's own network's owner of a, or for another
// network the first workload (by UID) that says it is there. Only for telemetry: a claim on another network's
// address is not checked against anything here, so it must never decide where traffic goes.
func (s *Snapshot) WorkloadOn(network string, a netip.Addr) (*Workload, bool) {
	if !OffNetwork(s.network, network) {
		return s.WorkloadByAddr(a)
	}
	w, ok := s.offNet[netAddr{network, a.Unmap()}]
	return s.fresh(w), ok
}

// OffNetwork reports whether a workload on network w is on another network than here: reached only through
// that network's gateway, at addresses that mean nothing here. An empty network on either side is one flat
// network.
func OffNetwork(here, w string) bool { return here != "" && w != "" && w != here }

// waypointAddrs are the addresses waypoints are reached on: over HBONE.
func waypointAddrs(ws []*Waypoint) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, w := range ws {
		for _, a := range w.Addresses {
			out[a.Unmap()] = true
		}
	}
	return out
}

func (s *Snapshot) indexWorkloads(workloads []*Workload, prev *Snapshot, hbone map[netip.Addr]bool, requireProof bool, network string) {
	s.byUID = make(map[string]*Workload, len(workloads))
	ws := slices.Clone(workloads)
	// By UID, the stronger source first: of two sources that name one UID (a peer named as a
	// [[remote_workload]]'s node), only the stronger is the UID's, and only it claims addresses.
	slices.SortStableFunc(ws, func(a, b *Workload) int { return cmp.Or(strings.Compare(a.UID, b.UID), a.rank()-b.rank()) })
	ws = s.dropUIDImpostors(ws)
	s.workloads = ws
	nAddrs, nAddrPorts := 0, 0 // of the claims that contest an address here
	for _, w := range ws {
		if !(requireProof && w.rank() > rankProven) && !OffNetwork(network, w.Network) {
			nAddrs += len(w.Addresses)
			nAddrPorts += len(w.Addresses) * len(w.Ports)
		}
	}
	s.byAddr = make(map[netip.Addr]*Workload, nAddrs)
	s.byAddrPort = make(map[netip.AddrPort]*Workload, nAddrPorts)
	s.byServerName = map[string]*Workload{}
	var c claims
	c.init(nAddrs)
	for _, w := range ws {
		s.byUID[w.UID] = w
		if w.Local {
			s.local = append(s.local, w)
			if sn := w.ServerName(); sn != "" {
				s.byServerName[sn] = w
			}
		}
		if requireProof && w.rank() > rankProven { // a gossip claim its certificate does not prove: not used
			s.lose(w)
			for _, a := range w.Addresses {
				s.conflicts = append(s.conflicts, Conflict{Address: a, Loser: w.UID, Reason: ContestUnproven})
			}
			continue
		}
		if OffNetwork(network, w.Network) { // its addresses are its network's, not this one's
			s.indexOffNetwork(w)
			continue
		}
		for _, a := range w.Addresses {
			c.add(a, w)
		}
	}
	var buf []*Workload
	for i, a := range c.addrs {
		buf = c.of(i, buf[:0])
		s.indexAddress(a, buf, prev, hbone[a])
	}
}

// claims are the workloads that claim each address, in the order they claim it: one list of claimants chained
// per address, which takes a handful of allocations where a slice per address took one per address.
type claims struct {
	addrs      []netip.Addr       // in the order first claimed, for a stable conflict list
	pos        map[netip.Addr]int // address -> its index in addrs
	head, tail []int              // per address, its first and last claimant in chain
	chain      []claimant         // chain[0] is unused: 0 ends a list
}

type claimant struct {
	w    *Workload
	next int
}

func (c *claims) init(n int) {
	c.addrs, c.pos = make([]netip.Addr, 0, n), make(map[netip.Addr]int, n)
	c.head, c.tail, c.chain = make([]int, 0, n), make([]int, 0, n), make([]claimant, 1, n+1)
}

// add records that w claims a; a second claim of w's on a (an address listed twice) is one.
func (c *claims) add(a netip.Addr, w *Workload) {
	i, ok := c.pos[a]
	if ok && c.chain[c.tail[i]].w == w {
		return
	}
	c.chain = append(c.chain, claimant{w: w})
	at := len(c.chain) - 1
	if !ok {
		c.pos[a] = len(c.addrs)
		c.addrs, c.head, c.tail = append(c.addrs, a), append(c.head, at), append(c.tail, at)
		return
	}
	c.chain[c.tail[i]].next, c.tail[i] = at, at
}

// of appends the claimants of the i-th address to out.
func (c *claims) of(i int, out []*Workload) []*Workload {
	for j := c.head[i]; j != 0; j = c.chain[j].next {
		out = append(out, c.chain[j].w)
	}
	return out
}

// indexAddress decides who holds address a among the workloads that claim it
// (in UID order; contest.go says how). Workloads sharing the address with the
// winner hold it too; only holders index their ports, so a loser cannot take
// a port of the address it lost. Every other claimant is a conflict. When no
// one wins, the address is contested: routed to no one, never in plaintext.
func (s *Snapshot) indexAddress(a netip.Addr, claimants []*Workload, prev *Snapshot, waypoint bool) {
	winner, losers := contestAddress(a, claimants, prev, waypoint)
	if winner == nil {
		if slices.ContainsFunc(losers, func(l loss) bool { return l.reason == ContestUnresolved }) {
			if s.contested == nil {
				s.contested = map[netip.Addr]bool{}
			}
			s.contested[a] = true
		}
		for _, l := range losers {
			s.lose(l.w)
			s.conflicts = append(s.conflicts, Conflict{Address: a, Loser: l.w.UID, Reason: l.reason})
		}
		return
	}
	s.byAddr[a] = winner
	for _, w := range claimants {
		if w != winner && !sharing(winner, w) {
			continue
		}
		if w.Primary && !s.byAddr[a].Primary { // the address's primary answers clients without SNI
			s.byAddr[a] = w
		}
		for _, p := range w.Ports {
			s.byAddrPort[netip.AddrPortFrom(a, p)] = w
		}
	}
	for _, l := range losers {
		s.lose(l.w)
		s.conflicts = append(s.conflicts, Conflict{Address: a, Winner: s.byAddr[a].UID, Loser: l.w.UID, Reason: l.reason})
	}
}

// lose marks w as a workload that lost an address: it is no service's
// endpoint, so a service cannot route to an address its claim did not win.
func (s *Snapshot) lose(w *Workload) {
	if s.lost == nil {
		s.lost = map[string]bool{}
	}
	s.lost[w.UID] = true
}

// sharing reports whether two workloads may share an address: workloads of
// one node and one origin (both local or both remote, both from gossip or
// both from istiod or configuration: a peer naming another source's node is
// not of it) that each declare the ports they serve.
func sharing(a, b *Workload) bool {
	return a.Node == b.Node && a.Local == b.Local && a.Origin == b.Origin && len(a.Ports) > 0 && len(b.Ports) > 0
}

// MarkPrimaries marks, in declaration order, the first workload on each
// address as its primary.
func MarkPrimaries(ws []*Workload) {
	seen := map[netip.Addr]bool{}
	for _, w := range ws {
		for _, a := range w.Addresses {
			if !seen[a] {
				seen[a] = true
				w.Primary = true
			}
		}
	}
}

// Version orders snapshots: a newer snapshot has a larger version.
func (s *Snapshot) Version() uint64 { return s.version }

// Workloads returns every workload, ordered by UID. Do not modify.
func (s *Snapshot) Workloads() []*Workload {
	if s.over == nil {
		return s.workloads
	}
	out := make([]*Workload, len(s.workloads))
	for i, w := range s.workloads {
		out[i] = s.fresh(w)
	}
	return out
}

// Conflicts returns the address conflicts found when the snapshot was built.
func (s *Snapshot) Conflicts() []Conflict { return s.conflicts }

// Contested reports whether address a is claimed by workloads none of which
// could be given it: connections to it are refused, never sent in plaintext.
func (s *Snapshot) Contested(a netip.Addr) bool { return s.contested[a.Unmap()] }

// Unreachable reports whether a is the address of a mesh workload whose node failed or is cut off (Input.Unreachable),
// and that node.
func (s *Snapshot) Unreachable(a netip.Addr) (node string, ok bool) {
	node, ok = s.unreachable[a.Unmap()]
	return node, ok
}

// WorkloadByUID finds a workload by its UID.
func (s *Snapshot) WorkloadByUID(uid string) (*Workload, bool) {
	w, ok := s.byUID[uid]
	return s.fresh(w), ok
}

// WorkloadByAddr finds the workload that owns address a.
func (s *Snapshot) WorkloadByAddr(a netip.Addr) (*Workload, bool) {
	w, ok := s.byAddr[a.Unmap()]
	return s.fresh(w), ok
}

// WorkloadFor finds the workload a connection to ap is for: the one that
// declares the port on that address, else the address's primary workload.
func (s *Snapshot) WorkloadFor(ap netip.AddrPort) (*Workload, bool) {
	if w, ok := s.byAddrPort[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())]; ok {
		return s.fresh(w), true
	}
	return s.WorkloadByAddr(ap.Addr())
}

// LocalFor is WorkloadFor for local workloads only.
func (s *Snapshot) LocalFor(ap netip.AddrPort) (*Workload, bool) {
	w, ok := s.WorkloadFor(ap)
	if !ok || !w.Local {
		return nil, false
	}
	return w, true
}

// LocalByServerName finds the local workload with address a that SNI sn selects.
func (s *Snapshot) LocalByServerName(a netip.Addr, sn string) (*Workload, bool) {
	w, ok := s.byServerName[sn]
	if !ok || !w.HasAddress(a) {
		return nil, false
	}
	return w, true
}

// LocalByAddr finds the local workload that owns address a.
func (s *Snapshot) LocalByAddr(a netip.Addr) (*Workload, bool) {
	w, ok := s.WorkloadByAddr(a)
	if !ok || !w.Local {
		return nil, false
	}
	return w, true
}

// Local returns the workloads of this host, ordered by UID. Do not modify.
func (s *Snapshot) Local() []*Workload { return s.local }
