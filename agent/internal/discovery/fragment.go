package discovery

import (
	"bytes"
	"compress/flate"
	"io"
	"math"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ambient-agent/ambient-agent/agent/internal/pbwire"
)

// Fragments. A record larger than a broadcast (maxBroadcastBytes: about five workloads with their services) is
// compressed and gossiped in pieces that each fit one, so that its change spreads epidemically like a small one
// instead of being pulled from its node by every member (repair.go), which answers at most replyRate a second.
// Receivers put the pieces back together, inflate them (never past MaxRecordBytes) and offer the record as if it
// had come whole: it is checked against its node's advertisement and verified as any record is. Only a record
// accepted that way is passed on, piece by piece, so unverifiable pieces are never amplified by honest members.
// An agent that does not know fragments ignores them and pulls the record as before.
const (
	kindFragment byte = 6 // body: fragment; one piece of a compressed record

	fragmentNode, fragmentVersion, fragmentIndex, fragmentCount, fragmentData protowire.Number = 1, 2, 3, 4, 5

	// fragmentData bounds the compressed bytes of one piece: with the node name (at most 63 bytes), the version
	// and the framing, a piece stays within maxBroadcastBytes.
	fragmentBytes = maxBroadcastBytes - 128
	// maxFragments bounds the pieces of one record: a record whose compressed form needs more is pulled.
	maxFragments = 64
	// maxAssemblyBytes bounds the pieces held while records are put together, over all nodes; an assembly
	// unfinished after assemblyTimeout is dropped (its record is then pulled).
	maxAssemblyBytes = 8 << 20
	assemblyTimeout  = 30 * time.Second
)

// fragment is one piece of a record.
type fragment struct {
	node    string
	version uint64
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
	return encodeMessage(kindFragment, b)
}

func decodeFragment(body []byte) (fragment, error) {
	var f fragment
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
		}
		return err
	})
	switch {
	case err != nil:
		return fragment{}, err
	case f.node == "" || f.version == 0:
		return fragment{}, drop(reasonMalformed, "a record fragment without its node or version")
	case f.count == 0 || f.index >= f.count:
		return fragment{}, drop(reasonMalformed, "record fragment %d of %d", f.index, f.count)
	case len(f.data) == 0 || len(f.data) > fragmentBytes:
		return fragment{}, drop(reasonTooLarge, "a record fragment of %d bytes", len(f.data))
	}
	return f, nil
}

// fragments compresses raw, the encoding of version of node's record, and cuts it into broadcast messages; nil
// when the compressed record needs more than maxFragments of them.
func fragments(node string, version uint64, raw []byte) [][]byte {
	var z bytes.Buffer
	w, _ := flate.NewWriter(&z, flate.BestCompression) // only an invalid level fails
	_, _ = w.Write(raw)                                // a bytes.Buffer does not fail
	_ = w.Close()
	data := z.Bytes()
	count := (len(data) + fragmentBytes - 1) / fragmentBytes
	if count > maxFragments {
		return nil
	}
	out := make([][]byte, 0, count)
	for i := range count {
		piece := data[i*fragmentBytes : min((i+1)*fragmentBytes, len(data))]
		out = append(out, encodeFragment(fragment{node: node, version: version, index: i, count: count, data: piece}))
	}
	return out
}

// assembly is a record being put together from its fragments.
type assembly struct {
	version uint64
	parts   [][]byte
	have    int
	bytes   int
	started time.Time
}

// assemblies are the records being put together, by node (under Discovery.mu).
type assemblies struct {
	byNode map[string]*assembly
	bytes  int
	// done is the last version put together per node: relays repeat its pieces after it is complete.
	done map[string]uint64
}

// add takes fragment f of a node whose record in use (if any) has version current, and returns the complete
// compressed record when f was its last missing piece.
func (as *assemblies) add(f fragment, current uint64, now time.Time) ([]byte, error) {
	if f.version <= as.done[f.node] {
		return nil, nil // a piece of a record put together already, relayed again
	}
	if f.version <= current {
		return nil, drop(reasonStale, "a fragment of version %d of node %q, which holds %d", f.version, f.node, current)
	}
	a := as.byNode[f.node]
	switch {
	case a != nil && a.version > f.version:
		return nil, drop(reasonStale, "a fragment of version %d of node %q, which is putting %d together", f.version, f.node, a.version)
	case a != nil && a.version == f.version && len(a.parts) != f.count:
		as.remove(f.node)
		return nil, drop(reasonMalformed, "fragments of version %d of node %q disagree on their count", f.version, f.node)
	case a == nil || a.version < f.version:
		as.remove(f.node)
		a = &assembly{version: f.version, parts: make([][]byte, f.count), started: now}
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
	if as.done == nil || len(as.done) >= maxStateRecords {
		as.done = map[string]uint64{} // bounded: members only reach here, and a reset costs repeats only
	}
	as.done[f.node] = f.version
	return bytes.Join(a.parts, nil), nil
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

// inflate decompresses a record put together from fragments, refusing one that inflates past MaxRecordBytes.
func inflate(data []byte) ([]byte, error) {
	r := flate.NewReader(bytes.NewReader(data))
	defer func() { _ = r.Close() }()
	raw, err := io.ReadAll(io.LimitReader(r, MaxRecordBytes+1))
	switch {
	case err != nil:
		return nil, drop(reasonMalformed, "a record put together from fragments does not inflate: %v", err)
	case len(raw) > MaxRecordBytes:
		return nil, drop(reasonTooLarge, "a record put together from fragments inflates past %d bytes", MaxRecordBytes)
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
	switch {
	case p == nil:
		err = drop(reasonUnknownNode, "a fragment of node %q, not a member", f.node)
	case f.version > uint64(now.Add(maxClockSkew).UnixNano()):
		err = drop(reasonInvalid, "version %d of node %q is from the future", f.version, f.node)
	default:
		var current uint64
		if p.current != nil {
			current = p.current.rec.Version
		}
		data, err = d.assembling.add(f, current, now)
	}
	d.mu.Unlock()
	if err != nil {
		d.dropped(err, f.node, "record fragment")
		return
	}
	if data == nil {
		return
	}
	raw, err := inflate(data)
	if err != nil {
		d.dropped(err, f.node, "record fragment")
		return
	}
	d.offer(raw, true)
}

// broadcastFragments queues the record in pieces: its node publishing it, or a member relaying it. A newer
// version's piece replaces the queued piece of the same index.
func (d *Discovery) broadcastFragments(node string, version uint64, raw []byte) bool {
	pieces := fragments(node, version, raw)
	for i, msg := range pieces {
		d.queue.QueueBroadcast(&recordBroadcast{name: "record/" + node + "/" + strconv.Itoa(i), msg: msg})
	}
	return pieces != nil
}
