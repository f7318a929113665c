package discovery

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// held is a record as received: decoded, with its wire bytes and what they hash to.
type held struct {
	rec       *Record
	raw       []byte
	advert    advert
	workloads []*state.Workload
	proof     proven
	relay     bool     // arrived as a gossip broadcast: pass it on once it is verified
	pieces    [][]byte // the fragments it is relayed in, when it is too large to broadcast whole (fragment.go)
}

func newHeld(rec *Record, raw []byte, relay bool, p proven) *held {
	ws := remoteWorkloads(rec, p)
	// The record keeps the derived workloads rather than a second copy of each: they carry the same claims
	// (names, identity, addresses), which is what the record's workloads are read for once it is held.
	rec.Workloads = ws
	return &held{rec: rec, raw: raw, advert: advertOf(raw, rec.Version), workloads: ws, proof: p, relay: relay}
}

// expiredProofs reports whether the record's signatures no longer count at now.
func (h *held) expiredProofs(now time.Time) bool {
	return h.proof.signed && !now.Before(h.proof.expires)
}

// memberStatus is what memberlist last told us about a node.
type memberStatus int

// A node that left or failed is down; peer.left tells them apart.
const (
	statusAlive memberStatus = iota
	statusDown
)

func (s memberStatus) String() string {
	return [...]string{"alive", "down"}[s]
}

// peer is what this node knows about another one.
type peer struct {
	name       string
	addr       netip.AddrPort
	status     memberStatus
	since      time.Time // of the last status change
	advertised advert
	hasAdvert  bool
	// unadvertised is when an alive node started advertising no record (zero while it advertises one).
	unadvertised time.Time
	// verifiedAhead is when a record of the node was last verified before its advertisement.
	verifiedAhead time.Time
	current       *held // the record in use
	pending       *held // a newer record whose advertisement has not arrived yet
	// left: the node said it was leaving (memberlist's StateLeft), rather than failing or being cut off.
	left bool
	// unreachable are the addresses of the workloads of a record dropped because its node failed or was cut off
	// (not left): never sent to in plaintext while the node may come back (see unreachable).
	unreachable []netip.Addr
	missing     time.Time
	requested   time.Time
}

func (p *peer) holds(a advert) bool { return p.current != nil && p.current.advert.digest == a.digest }

// outcome of offering a record to the table.
type outcome int

const (
	accepted  outcome = iota // now the node's current record
	heldBack                 // kept until the node advertises it
	duplicate                // the current record already
	dropped                  // see the error
)

// table decides which record of each node is current (see the package comment). It is pure: the caller holds the
// lock, passes the time, and does the I/O the results ask for.
type table struct {
	self      string
	grace     time.Duration
	reconnect time.Duration // how long a failed node's address is kept for rejoining
	peers     map[string]*peer
	gen       uint64   // changes whenever the set of current records changes
	changes   []change // what the last generations changed (changes.go)
	nAlive    int      // peers with statusAlive
}

func newTable(self string, grace, reconnect time.Duration) *table {
	return &table{self: self, grace: grace, reconnect: max(grace, reconnect), peers: map[string]*peer{}}
}

// up records that name is an alive member advertising a (ok false: no record). It returns the held record that
// was waiting for this advertisement and is now current, if any.
func (t *table) up(name string, addr netip.AddrPort, a advert, ok bool, now time.Time) *held {
	if name == t.self {
		return nil
	}
	p := t.peers[name]
	if p == nil {
		p = &peer{name: name, since: now}
		t.peers[name] = p
		t.nAlive++
	}
	if p.status != statusAlive {
		if now.Sub(p.since) >= t.grace {
			t.drop(p) // expired, though expire has not run yet
		}
		p.status, p.since, p.left = statusAlive, now, false
		t.nAlive++
	}
	p.addr = addr
	p.advertised, p.hasAdvert = a, ok
	if !ok {
		// A node advertises no record only while it has none yet: restarted, waiting for the certificates that
		// sign its claims. Its previous record stays in use for the grace period, as a gone node's, so that a
		// restart never hands what it held to another claimant.
		p.pending, p.missing = nil, time.Time{}
		if p.unadvertised.IsZero() {
			p.unadvertised = now
		}
		return nil
	}
	p.unadvertised = time.Time{}
	switch {
	case p.holds(a):
		p.missing = time.Time{}
		if p.pending != nil && p.pending.advert.version <= a.version {
			p.pending = nil
		}
		return nil
	case p.pending != nil && p.pending.advert.digest == a.digest:
		h := p.pending
		p.pending, p.missing = nil, time.Time{}
		t.setCurrent(p, h)
		return h
	}
	if p.pending != nil && p.pending.advert.version <= a.version {
		p.pending = nil
	}
	if p.missing.IsZero() {
		p.missing = now
	}
	return nil
}

// known reports whether node's current or pending record is the one with digest: it was verified already.
func (t *table) known(node string, digest [32]byte) bool {
	p := t.peers[node]
	return p != nil && ((p.current != nil && p.current.advert.digest == digest) || (p.pending != nil && p.pending.advert.digest == digest))
}

// expireProofs stops using the records whose signatures expired (their publishers stopped signing them: gone,
// or cut off for ProofLifetime) and returns their nodes. A re-signed record replaces them as any newer one does.
func (t *table) expireProofs(now time.Time) []string {
	var gone []string
	for name, p := range t.peers {
		if p.pending != nil && p.pending.expiredProofs(now) {
			p.pending = nil
		}
		if p.current != nil && p.current.expiredProofs(now) {
			t.drop(p)
			p.missing = now // asked for again, in case its node re-signed it meanwhile
			gone = append(gone, name)
		}
	}
	slices.Sort(gone)
	return gone
}

// down records that a node failed or left (left: it said so). Its record stays in use for the grace period.
func (t *table) down(name string, now time.Time, left bool) {
	p := t.peers[name]
	if p == nil || p.status == statusDown {
		return
	}
	p.status, p.since, p.left = statusDown, now, left
	t.nAlive--
	p.pending, p.missing = nil, time.Time{}
	if t.grace == 0 {
		t.drop(p)
	}
}

// drop stops using p's record. Unless p left, its workloads' addresses stay unreachable: a node that failed, or
// is cut off, may come back with them, and a connection to one of them meanwhile must not go out in plaintext as
// if the address had never been the mesh's (the route refuses it instead).
func (t *table) drop(p *peer) {
	if p.current != nil && !p.left {
		var addrs []netip.Addr
		for _, w := range p.current.workloads {
			addrs = append(addrs, w.Addresses...)
		}
		p.unreachable = addrs
	}
	t.setCurrent(p, nil)
}

// unreachable are the addresses of the workloads of failed or cut-off nodes whose records are dropped (by node),
// for as long as those nodes are remembered (the reconnect period) and have no record in use.
func (t *table) unreachable() map[netip.Addr]string {
	var out map[netip.Addr]string
	for name, p := range t.peers {
		if p.current != nil || len(p.unreachable) == 0 {
			continue
		}
		if out == nil {
			out = map[netip.Addr]string{}
		}
		for _, a := range p.unreachable {
			out[a] = name
		}
	}
	return out
}

// offer proposes a record received from the network. err is a *dropError when the outcome is dropped.
func (t *table) offer(h *held, now time.Time) (outcome, error) {
	if err := t.precheck(h.rec.Node, h.advert, now); err != nil {
		return dropped, err
	}
	p := t.peers[h.rec.Node]
	if p.holds(h.advert) {
		return duplicate, nil
	}
	if p.hasAdvert && p.advertised.digest == h.advert.digest {
		p.pending, p.missing = nil, time.Time{}
		t.setCurrent(p, h)
		return accepted, nil
	}
	p.pending = h
	return heldBack, nil
}

// precheck says why a record of node name with advertisement a would not be used (nil when it would): checked
// before its proofs are verified, so that what the table would drop anyway costs no signature check.
func (t *table) precheck(name string, a advert, now time.Time) error {
	if name == t.self {
		return drop(reasonSelf, "a record in this node's name (version %d)", a.version)
	}
	p := t.peers[name]
	if p == nil || (p.status != statusAlive && now.Sub(p.since) >= t.grace) {
		return drop(reasonUnknownNode, "node %q is not a member", name)
	}
	if p.holds(a) {
		return nil
	}
	if p.current != nil && a.version < p.current.advert.version {
		// Never back to an older record, even one advertised: an advertisement can be forged until its node
		// refutes it, and an old record (signed within the hour) would bring back what its node removed.
		return drop(reasonStale, "version %d of node %q, older than the one in use (%d)", a.version, name, p.current.advert.version)
	}
	if p.hasAdvert && p.advertised.digest == a.digest {
		return nil
	}
	switch {
	case !p.hasAdvert || a.version > p.advertised.version:
		if p.status == statusAlive && (p.pending == nil || a.version > p.pending.advert.version) {
			return nil // held until its advertisement arrives
		}
		return drop(reasonStale, "version %d of node %q is not newer than the one held back", a.version, name)
	case a.version == p.advertised.version:
		return drop(reasonMismatch, "node %q advertises another record with version %d", name, a.version)
	}
	return drop(reasonStale, "version %d of node %q, it advertises %d", a.version, name, p.advertised.version)
}

// expire drops the records of nodes gone for longer than the grace period, and forgets them after the reconnect
// period. It returns the nodes whose records it dropped.
func (t *table) expire(now time.Time) []string {
	var gone []string
	for name, p := range t.peers {
		if p.status == statusAlive {
			if !p.unadvertised.IsZero() && now.Sub(p.unadvertised) >= t.grace && p.current != nil {
				t.drop(p)
				gone = append(gone, name)
			}
			continue
		}
		age := now.Sub(p.since)
		if age >= t.grace && p.current != nil {
			t.drop(p)
			gone = append(gone, name)
		}
		if age >= t.reconnect {
			if len(p.unreachable) > 0 {
				t.gen++ // its addresses are no longer held unreachable
				t.logChange("", false)
			}
			delete(t.peers, name)
		}
	}
	slices.Sort(gone)
	return gone
}

// target is a node to send something to.
type target struct {
	name string
	addr netip.AddrPort
}

// wanted returns the alive nodes to ask for their advertised record: missing for longer than delay (at once when
// the record is too large to come as a broadcast), and not asked within retry.
func (t *table) wanted(now time.Time, delay, retry time.Duration) []target {
	var out []target
	for name, p := range t.peers {
		if p.status != statusAlive || p.missing.IsZero() {
			continue
		}
		// Every record travels by gossip, whole or in fragments (fragment.go): asked for only when late. Fragments
		// hop by hop take longer than a whole record: they are given three times as long.
		wait := delay
		if p.advertised.size > maxBroadcastBytes {
			wait = 3 * delay
		}
		if now.Sub(p.missing) >= wait && now.Sub(p.requested) >= retry {
			p.requested = now
			out = append(out, target{name: name, addr: p.addr})
		}
	}
	slices.SortFunc(out, func(a, b target) int { return strings.Compare(a.name, b.name) })
	return out
}

func (t *table) setCurrent(p *peer, h *held) {
	if p.current == h || (p.current != nil && h != nil && bytes.Equal(p.current.raw, h.raw)) {
		p.current = h
		return
	}
	workloads := workloadsOnly(p.current, h) && len(p.unreachable) == 0
	p.current = h
	if h != nil {
		p.unreachable = nil
	}
	t.gen++
	t.logChange(p.name, workloads)
}

// current returns the records in use, ordered by node name.
func (t *table) current() []*held {
	out := make([]*held, 0, len(t.peers))
	for _, p := range t.peers {
		if p.current != nil {
			out = append(out, p.current)
		}
	}
	slices.SortFunc(out, func(a, b *held) int { return strings.Compare(a.rec.Node, b.rec.Node) })
	return out
}

// aliveAddrs returns the addresses of the alive members.
func (t *table) aliveAddrs() map[netip.AddrPort]bool {
	out := make(map[netip.AddrPort]bool, len(t.peers))
	for _, p := range t.peers {
		if p.status == statusAlive {
			out[p.addr] = true
		}
	}
	return out
}

// alive counts the alive members, this node included.
func (t *table) alive() int { return 1 + t.nAlive }

// downAddrs returns the addresses of nodes that are down, candidates for rejoining.
func (t *table) downAddrs() []netip.AddrPort {
	var out []netip.AddrPort
	for _, p := range t.peers {
		if p.status == statusDown && p.addr.IsValid() {
			out = append(out, p.addr)
		}
	}
	slices.SortFunc(out, netip.AddrPort.Compare)
	return out
}

// randomAlive picks an alive member (zero if there is none).
func (t *table) randomAlive() target {
	n := 0
	var out target
	for name, p := range t.peers {
		if p.status != statusAlive {
			continue
		}
		if n++; rand.IntN(n) == 0 { // reservoir sampling: each alive member equally likely
			out = target{name: name, addr: p.addr}
		}
	}
	return out
}
