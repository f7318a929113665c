package discovery

import (
	"bytes"
	"log/slog"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

const warnLevel = slog.LevelWarn

// maxStateBytes bounds the push/pull state this node sends (memberlist refuses more than 20 MiB).
const maxStateBytes = 16 << 20

// memberUp handles memberlist's join and update events: a node is alive and advertises a record.
func (d *Discovery) memberUp(n *memberlist.Node) {
	if n.Name == d.name {
		return
	}
	a, ok, err := decodeMeta(n.Meta)
	if err != nil {
		d.dropped(err, n.Name, "advertisement")
	}
	d.mu.Lock()
	p := d.table.peers[n.Name]
	wasAlive := p != nil && p.status == statusAlive
	gen := d.table.gen
	promoted := d.table.up(n.Name, addrPort(n.Addr, n.Port), a, ok, time.Now())
	changed := gen != d.table.gen
	d.numAlive.Store(int64(d.table.alive()))
	d.mu.Unlock()
	if !wasAlive {
		d.log.Info("gossip: node up", "node", n.Name, "address", n.Address())
	}
	if promoted != nil {
		d.stats.accepted.Add(1)
		if promoted.relay {
			d.relay(promoted)
		}
	}
	if changed {
		d.notify()
	}
}

// memberDown handles memberlist's leave event (a node left or was declared dead).
func (d *Discovery) memberDown(n *memberlist.Node) {
	if n.Name == d.name {
		return
	}
	d.mu.Lock()
	gen := d.table.gen
	d.table.down(n.Name, time.Now(), n.State == memberlist.StateLeft)
	changed := gen != d.table.gen
	d.numAlive.Store(int64(d.table.alive()))
	d.mu.Unlock()
	d.log.Info("gossip: node down; its records stay in use for the grace period", "node", n.Name,
		"address", n.Address(), "grace", d.opts.GracePeriod)
	if changed {
		d.notify()
	}
}

// receive handles a user message: a record or a request.
func (d *Discovery) receive(b []byte) {
	kind, body, err := decodeMessage(b)
	if err != nil {
		d.dropped(err, "", "message")
		return
	}
	switch kind {
	case kindBroadcast:
		d.offer(body, true)
	case kindFragment:
		d.receiveFragment(body)
	case kindReply:
		d.offer(body, false)
	case kindRecords:
		records, err := decodeState(body)
		if err != nil {
			d.dropped(err, "", "records")
			return
		}
		for _, r := range records {
			d.offer(r, false)
		}
	case kindRequest:
		req, err := decodeRequest(body)
		if err != nil {
			d.dropped(err, "", "request")
			return
		}
		d.queueReply(req)
	default:
		d.log.Debug("gossip: ignoring a message of an unknown kind", "kind", kind)
	}
}

// mergeState takes the records of a push/pull. A broken state is dropped whole; each record in it stands or
// falls on its own (its digest must be the one its node advertises). The first record is the sender's own: when
// it is news here (the sender has just joined through this node), it is relayed like a broadcast.
func (d *Discovery) mergeState(b []byte) {
	kind, body, err := decodeMessage(b)
	if err == nil && kind != kindState {
		err = drop(reasonMalformed, "push/pull state of kind %d", kind)
	}
	var records [][]byte
	if err == nil {
		records, err = decodeState(body)
	}
	if err != nil {
		d.dropped(err, "", "push/pull state")
		return
	}
	for i, r := range records {
		d.offer(r, i == 0)
	}
}

// localState is this node's record (first) and, on a join, every record it uses, for a push/pull.
func (d *Discovery) localState(join bool) []byte {
	d.mu.Lock()
	var records [][]byte
	size := 0
	if d.local != nil {
		records = append(records, d.local.raw)
		size += len(d.local.raw)
	}
	if !join {
		// A periodic exchange carries this node's own record only: the others' are signed (a certificate and a
		// signature each) and the peer knows their digests from memberlist's metadata, so what it misses it asks
		// their nodes for (repair.go). A join carries everything, so that a new node, or a healed partition,
		// converges in one exchange.
		d.mu.Unlock()
		return encodeState(records)
	}
	for _, h := range d.table.current() {
		if size += len(h.raw); size > maxStateBytes {
			break
		}
		records = append(records, h.raw)
	}
	d.mu.Unlock()
	return encodeState(records)
}

// offer decodes a received record and proposes it to the table; relay says it came as a broadcast.
func (d *Discovery) offer(b []byte, relay bool) {
	raw := bytes.Clone(b)
	rec, err := decodeRecord(raw)
	if err != nil {
		d.dropped(err, "", "record")
		return
	}
	a := advertOf(raw, rec.Version)
	known, err := d.precheck(rec, a)
	if known { // push/pull brings every record again: verified once is enough
		return
	}
	if err != nil { // what the table would drop, or a record whose proofs failed before, costs no signature check
		d.droppedRecord(err, rec)
		return
	}
	p, err := d.verify(rec, raw, a)
	if err != nil {
		d.droppedRecord(err, rec)
		return
	}
	h := newHeld(rec, raw, relay, p)
	if relay {
		h.pieces = cut(rec.Node, rec.Version, raw)
	}
	d.install(h, relay)
}

// precheck says whether the record is one this node holds already, and else
// why the table would drop it without a look at its proofs: an unknown or
// paced node, a version already refused, one from the future.
func (d *Discovery) precheck(rec *Record, a advert) (known bool, err error) {
	now := time.Now()
	d.mu.Lock()
	known = d.table.known(rec.Node, a.digest)
	err = d.table.precheck(rec.Node, a, now)
	if err == nil {
		err = d.rejected.get(a.digest)
	}
	if err == nil {
		err = d.paceUnadvertised(rec.Node, a, now)
	}
	d.mu.Unlock()
	if err == nil && rec.Version > uint64(now.Add(maxClockSkew).UnixNano()) {
		err = drop(reasonInvalid, "version %d of node %q is from the future (clocks more than %s apart?)", rec.Version, rec.Node, maxClockSkew)
	}
	return known, err
}

// verify checks the record's signature and proofs. A record that fails is
// remembered as refused, unless it only expired (a matter of clocks may pass:
// asked again later, checked again).
func (d *Discovery) verify(rec *Record, raw []byte, a advert) (proven, error) {
	p, err := verifyProofs(rec, raw[:rec.signedLen], &d.opts.Trust, time.Now())
	if err != nil {
		if reasonOf(err) != reasonExpired {
			d.mu.Lock()
			d.rejected.add(a.digest, err)
			d.mu.Unlock()
		}
		return p, err
	}
	if !p.signed {
		d.warn.logf(warnLevel, "unsigned:"+rec.Node, "gossip: using a record that proves nothing ([gossip] accept_unsigned); its claims count as unproven ones",
			"node", rec.Node)
	}
	return p, nil
}

// install offers a verified record to the table, relays it when it was
// accepted and relay is asked, and wakes the watchers when the view changed.
func (d *Discovery) install(h *held, relay bool) {
	d.mu.Lock()
	gen := d.table.gen
	out, err := d.table.offer(h, time.Now())
	changed := gen != d.table.gen
	d.mu.Unlock()
	switch out {
	case accepted:
		d.stats.accepted.Add(1)
		d.log.Debug("gossip: record", "node", h.rec.Node, "version", h.rec.Version, "workloads", len(h.rec.Workloads))
		if relay {
			d.relay(h)
		}
	case dropped:
		d.droppedRecord(err, h.rec)
	}
	if changed {
		d.notify()
	}
}

// droppedRecord counts and logs a dropped record; one from a node this node
// does not know yet hints at where to find it.
func (d *Discovery) droppedRecord(err error, rec *Record) {
	d.dropped(err, rec.Node, "record")
	if reasonOf(err) == reasonUnknownNode && rec.Address.IsValid() {
		d.hint(rec.Address)
	}
}

// Reverify checks the records in use (and those waiting for their advertisement) against the trust bundles again (call it when they change): a record whose
// proofs no longer verify, a root removed from the bundle say, stops counting at once.
func (d *Discovery) Reverify() {
	d.mu.Lock()
	current := d.table.current()
	for _, p := range d.table.peers {
		if p.pending != nil {
			current = append(current, p.pending)
		}
	}
	d.mu.Unlock()
	now := time.Now()
	var failed []*held
	for _, h := range current {
		if _, err := verifyProofs(h.rec, h.raw[:h.rec.signedLen], &d.opts.Trust, now); err != nil {
			d.dropped(err, h.rec.Node, "record in use")
			failed = append(failed, h)
		}
	}
	d.mu.Lock()
	d.rejected = rejectedCache{} // a new bundle may verify what the old one did not
	d.mu.Unlock()
	if len(failed) == 0 {
		return
	}
	d.mu.Lock()
	gen := d.table.gen
	for _, h := range failed {
		p := d.table.peers[h.rec.Node]
		switch {
		case p == nil:
		case p.current == h:
			d.table.setCurrent(p, nil)
			p.missing = time.Now() // asked for again: its node may have re-signed it
		case p.pending == h:
			p.pending = nil
		}
	}
	changed := gen != d.table.gen
	d.mu.Unlock()
	if changed {
		d.notify()
	}
}

// paceUnadvertised lets one record a second per node be verified before its node advertises it (a record that
// outruns its advertisement): anyone can send records in any member's name, each costing a verification, and the
// advertised one is asked for directly anyway. Callers hold d.mu.
func (d *Discovery) paceUnadvertised(node string, a advert, now time.Time) error {
	p := d.table.peers[node]
	if p == nil || (p.hasAdvert && p.advertised.digest == a.digest) {
		return nil
	}
	if now.Sub(p.verifiedAhead) < time.Second {
		return drop(reasonStale, "a record of node %q it does not advertise yet; one a second is checked", node)
	}
	p.verifiedAhead = now
	return nil
}

// rejectedCache remembers, by digest, the records whose proofs failed, so that one sent again (relayed, in every
// push/pull) costs no second verification. Bounded: when full, it forgets everything.
type rejectedCache map[[32]byte]error

const maxRejected = 4096

func (c *rejectedCache) get(digest [32]byte) error { return (*c)[digest] }

func (c *rejectedCache) add(digest [32]byte, err error) {
	if *c == nil || len(*c) >= maxRejected {
		*c = rejectedCache{}
	}
	(*c)[digest] = err
}

// dropped counts and reports input that was not used. Races of normal operation (an old relay, a record of a
// node not known yet) are debug messages; anything that looks broken or hostile is a rate-limited warning.
func (d *Discovery) dropped(err error, node, what string) {
	reason := reasonOf(err)
	d.mu.Lock()
	if d.drops == nil {
		d.drops = map[string]uint64{}
	}
	d.drops[reason]++
	d.mu.Unlock()
	args := []any{"what", what, "reason", reason, "err", err}
	if node != "" {
		args = append(args, "node", node)
	}
	switch reason {
	case reasonStale, reasonUnknownNode, reasonSelf:
		d.log.Debug("gossip: dropped", args...)
	default:
		d.warn.logf(warnLevel, "drop:"+reason, "gossip: dropped bad input", args...)
	}
}

// relay queues a verified record for gossip: whole if it fits a packet, else in the fragments cut when it was
// received (relay may run under memberlist's locks: nothing is compressed here).
func (d *Discovery) relay(h *held) {
	if d.broadcast(h.rec.Node, h.raw, h.pieces) {
		d.stats.relayed.Add(1)
	}
}

// broadcast queues a record for gossip, whole or in its fragments (pieces); false when it is neither small
// enough nor cut (its receivers pull it).
func (d *Discovery) broadcast(node string, raw []byte, pieces [][]byte) bool {
	if msg := encodeMessage(kindBroadcast, raw); len(msg) <= maxBroadcastBytes {
		d.queue.QueueBroadcast(&recordBroadcast{name: "record/" + node, msg: msg})
		return true
	}
	for i, msg := range pieces {
		d.queue.QueueBroadcast(&recordBroadcast{name: "record/" + node + "/" + strconv.Itoa(i), msg: msg})
	}
	return pieces != nil
}

// recordBroadcast is one node's record in the gossip queue; a newer one of the same node replaces it.
type recordBroadcast struct {
	name string
	msg  []byte
}

func (b *recordBroadcast) Name() string    { return b.name }
func (b *recordBroadcast) Message() []byte { return b.msg }
func (b *recordBroadcast) Finished()       {}
func (b *recordBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(*recordBroadcast)
	return ok && o.name == b.name
}
