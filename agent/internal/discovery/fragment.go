package discovery

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"io"
	"math"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ambient-agent/ambient-agent/agent/internal/pbwire"
)

// Fragments. A record larger than a broadcast (maxBroadcastBytes: about five workloads with their services) is
// compressed and gossiped in pieces that each fit one, so that its change spreads epidemically like a small one
// instead of being pulled from its node by every member (repair.go), which answers at most replyRate a second.
// Every piece names the record's version and digest, and a receiver keeps only pieces of the record the node
// advertises (memberlist metadata: version, digest, size): pieces of anything else are dropped before they cost
// anything. A member passes each piece of the advertised record on once, the first time it sees it, whatever
// becomes of the record (pieces travel in separate packets to random members: relayed only once the whole record
// is in hand, they rarely all meet), so a forged piece is relayed no more than an honest one would be, and a
// refused record's pieces die out as any broadcast does. Put back together, the record must inflate to
// exactly the advertised size and digest; then it is offered as if it had come whole, and verified as any record
// is. A forged piece spoils its assembly at worst: the record is then pulled from its node (repair.go), and that
// node's failed assemblies are paced. An agent that does not know fragments ignores them and pulls the record as
// before.
const (
	kindFragment byte = 6 // body: fragment; one piece of a compressed record

	fragmentNode, fragmentVersion, fragmentIndex, fragmentCount, fragmentData, fragmentDigest protowire.Number = 1, 2, 3, 4, 5, 6

	// fragmentData bounds the compressed bytes of one piece: with the node name (at most 63 bytes), the version
	// and the framing, a piece stays within maxBroadcastBytes.
	fragmentBytes = maxBroadcastBytes - 128
	// maxFragments bounds the pieces of one record: a record whose compressed form needs more is pulled.
	maxFragments = 64
	// maxAssemblyBytes bounds the pieces held while records are put together, over all nodes; an assembly
	// unfinished after assemblyTimeout is dropped (its record is then pulled).
	maxAssemblyBytes = 8 << 20
	assemblyTimeout  = 30 * time.Second
	// failedPace is how long after an assembly of a node that did not inflate to its advertised record the node's
	// pieces are dropped: forged pieces cost one inflation a second at most.
	failedPace = time.Second
)

// fragment is one piece of a record.
type fragment struct {
	node    string
	version uint64
	digest  [sha256.Size]byte // of the whole record, as advertised
	index   int
	count   int
	data    []byte
}

func encodeFragment(f fragment) []byte {
	b := pbwire.AppendNonEmpty(nil, fragmentNode, f.node)
	b = pbwire.AppendNonZero(b, fragmentVersion, f.version)
	b = pbwire.AppendNonZero(b, fragmentIndex, uint64(f.index))
	b = pbwire.AppendNonZero(b, fragmentCount, uint64(f.count))
	b = pbwire.AppendBytes(b, fragmentData, f.data)
	b = pbwire.AppendBytes(b, fragmentDigest, f.digest[:])
	return encodeMessage(kindFragment, b)
}

func decodeFragment(body []byte) (fragment, error) {
	var f fragment
	var digest []byte
	err := eachField(body, func(fl pbwire.Field) error {
		var err error
		var v uint64
		switch fl.Num {
		case fragmentNode:
			f.node, err = fl.Str()
		case fragmentVersion:
			f.version, err = fl.Uint(math.MaxUint64)
		case fragmentIndex:
			v, err = fl.Uint(maxFragments - 1)
			f.index = int(v)
		case fragmentCount:
			v, err = fl.Uint(maxFragments)
			f.count = int(v)
		case fragmentData:
			f.data, err = fl.Bytes()
		case fragmentDigest:
			digest, err = fl.Bytes()
		}
		return err
	})
	switch {
	case err != nil:
		return fragment{}, err
	case f.node == "" || f.version == 0 || len(digest) != sha256.Size:
		return fragment{}, drop(reasonMalformed, "a record fragment without its node, version or digest")
	case f.count == 0 || f.index >= f.count:
		return fragment{}, drop(reasonMalformed, "record fragment %d of %d", f.index, f.count)
	case len(f.data) == 0:
		return fragment{}, drop(reasonMalformed, "an empty record fragment")
	case len(f.data) > fragmentBytes:
		return fragment{}, drop(reasonTooLarge, "a record fragment of %d bytes", len(f.data))
	}
	copy(f.digest[:], digest)
	return f, nil
}

var deflaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.DefaultCompression) // only an invalid level fails
	return w
}}

// fragments compresses raw, the encoding of version of node's record, and cuts it into broadcast messages; nil
// when the compressed record needs more than maxFragments of them.
func fragments(node string, version uint64, raw []byte) [][]byte {
	var z bytes.Buffer
	w := deflaters.Get().(*flate.Writer) // a writer's state is large (about 600 KB): reused
	w.Reset(&z)
	_, _ = w.Write(raw) // a bytes.Buffer does not fail
	_ = w.Close()
	deflaters.Put(w)
	data := z.Bytes()
	count := (len(data) + fragmentBytes - 1) / fragmentBytes
	if count > maxFragments {
		return nil
	}
	out := make([][]byte, 0, count)
	digest := sha256.Sum256(raw)
	for i := range count {
		piece := data[i*fragmentBytes : min((i+1)*fragmentBytes, len(data))]
		out = append(out, encodeFragment(fragment{node: node, version: version, digest: digest, index: i, count: count, data: piece}))
	}
	return out
}

// assembly is a record being put together from its fragments.
type assembly struct {
	version uint64
	digest  [sha256.Size]byte
	parts   [][]byte
	have    int
	bytes   int
	started time.Time
}

// assemblies are the records being put together, by node (under Discovery.mu).
type assemblies struct {
	byNode map[string]*assembly
	bytes  int
	// failed is when an assembly of a node last failed to inflate to the record advertised (see failedPace).
	failed map[string]time.Time
	// relayed are the pieces of each node's advertised record this member has passed on: each once, whatever
	// becomes of the assemblies (a record refused would otherwise be passed on again at each copy, for ever).
	relayed map[string]*relayMark
}

// relayMark is the pieces of one record passed on.
type relayMark struct {
	version uint64
	digest  [sha256.Size]byte
	pieces  uint64 // bit i: piece i (at most maxFragments = 64)
}

// relayOnce reports whether f is to be passed on: the first time this member sees its piece of that record.
func (as *assemblies) relayOnce(f fragment) bool {
	m := as.relayed[f.node]
	if m == nil || m.version != f.version || m.digest != f.digest {
		if as.relayed == nil || len(as.relayed) >= maxStateRecords {
			as.relayed = map[string]*relayMark{} // bounded: members only reach here
		}
		m = &relayMark{version: f.version, digest: f.digest}
		as.relayed[f.node] = m
	}
	bit := uint64(1) << f.index
	if m.pieces&bit != 0 {
		return false
	}
	m.pieces |= bit
	return true
}

// add takes fragment f, a piece of the record its node advertises, and returns the complete compressed record
// when f was its last missing piece.
func (as *assemblies) add(f fragment, now time.Time) (data []byte, err error) {
	if t, ok := as.failed[f.node]; ok {
		if now.Sub(t) < failedPace {
			return nil, drop(reasonStale, "a fragment of node %q, whose last assembly failed less than %s ago", f.node, failedPace)
		}
		delete(as.failed, f.node)
	}
	a := as.byNode[f.node]
	switch {
	case a != nil && (a.version != f.version || a.digest != f.digest):
		as.remove(f.node) // the node advertises another record now
		a = nil
	case a != nil && len(a.parts) != f.count:
		as.remove(f.node)
		as.fail(f.node, now)
		return nil, drop(reasonMalformed, "fragments of version %d of node %q disagree on their count", f.version, f.node)
	}
	if a == nil {
		a = &assembly{version: f.version, digest: f.digest, parts: make([][]byte, f.count), started: now}
		if as.byNode == nil {
			as.byNode = map[string]*assembly{}
		}
		as.byNode[f.node] = a
	}
	if a.parts[f.index] != nil {
		return nil, nil // a piece seen already: relays repeat it
	}
	if as.bytes+len(f.data) > maxAssemblyBytes {
		as.remove(f.node)
		return nil, drop(reasonTooLarge, "fragments held over %d bytes", maxAssemblyBytes)
	}
	a.parts[f.index] = bytes.Clone(f.data)
	a.have++
	a.bytes += len(f.data)
	as.bytes += len(f.data)
	if a.have < len(a.parts) {
		return nil, nil
	}
	as.remove(f.node)
	return bytes.Join(a.parts, nil), nil
}

// fail records that an assembly of node did not give the record advertised.
func (as *assemblies) fail(node string, now time.Time) {
	if as.failed == nil || len(as.failed) >= maxStateRecords {
		as.failed = map[string]time.Time{} // bounded: only members' pieces reach here
	}
	as.failed[node] = now
}

func (as *assemblies) remove(node string) {
	if a := as.byNode[node]; a != nil {
		as.bytes -= a.bytes
		delete(as.byNode, node)
	}
}

// expire drops the assemblies begun before now - assemblyTimeout.
func (as *assemblies) expire(now time.Time) {
	for node, a := range as.byNode {
		if now.Sub(a.started) > assemblyTimeout {
			as.remove(node)
		}
	}
}

// inflate decompresses a record put together from fragments, refusing one that inflates past size bytes (the
// advertised size, at most MaxRecordBytes).
func inflate(data []byte, size int) ([]byte, error) {
	size = min(size, MaxRecordBytes)
	r := flate.NewReader(bytes.NewReader(data))
	defer func() { _ = r.Close() }()
	raw, err := io.ReadAll(io.LimitReader(r, int64(size)+1))
	switch {
	case err != nil:
		return nil, drop(reasonMalformed, "a record put together from fragments does not inflate: %v", err)
	case len(raw) > size:
		return nil, drop(reasonTooLarge, "a record put together from fragments inflates past %d bytes", size)
	}
	return raw, nil
}

// receiveFragment takes one fragment; the record it completes is offered (and, once accepted, relayed).
func (d *Discovery) receiveFragment(body []byte) {
	f, err := decodeFragment(body)
	if err != nil {
		d.dropped(err, "", "record fragment")
		return
	}
	if f.node == d.name {
		return
	}
	now := time.Now()
	d.mu.Lock()
	p := d.table.peers[f.node]
	var data []byte
	var size int
	var fresh bool
	switch {
	case p == nil:
		err = drop(reasonUnknownNode, "a fragment of node %q, not a member", f.node)
	case p.current != nil && p.current.advert.version >= f.version:
		// a piece of the record in use (relays repeat it) or of an older one
	case !p.hasAdvert || p.advertised.version != f.version || p.advertised.digest != f.digest:
		err = drop(reasonStale, "a fragment of version %d of node %q, which advertises another record", f.version, f.node)
	default:
		size = p.advertised.size
		if data, err = d.assembling.add(f, now); err == nil {
			fresh = d.assembling.relayOnce(f)
		}
	}
	d.mu.Unlock()
	if err != nil {
		d.dropped(err, f.node, "record fragment")
		return
	}
	// Passed on once, encoded anew from what was read (nothing else a sender put in it travels further).
	if msg := encodeFragment(f); fresh && len(msg) <= maxBroadcastBytes {
		d.queue.QueueBroadcast(&recordBroadcast{name: "record/" + f.node + "/" + strconv.Itoa(f.index), msg: msg})
	}
	if data == nil {
		return
	}
	raw, err := inflate(data, size)
	if err == nil && (len(raw) != size || sha256.Sum256(raw) != f.digest) {
		err = drop(reasonMismatch, "fragments of version %d of node %q put together are not the record it advertises", f.version, f.node)
	}
	if err != nil {
		d.mu.Lock()
		d.assembling.fail(f.node, now)
		d.mu.Unlock()
		d.dropped(err, f.node, "record fragment")
		return
	}
	d.stats.relayed.Add(1) // its pieces were
	d.offer(raw, false)
}

// cut is the fragments of a record too large to broadcast whole; nil for one that fits.
func cut(node string, version uint64, raw []byte) [][]byte {
	if len(raw)+3 <= maxBroadcastBytes {
		return nil
	}
	return fragments(node, version, raw)
}
