package discovery

import (
	"crypto/sha256"
	"math"
	"net/netip"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/pbwire"
)

// Messages between agents (memberlist user messages and push/pull state): header, kind, body.
const (
	kindBroadcast byte = 1 // body: one encoded record, gossiped by its node or relayed by others
	kindRequest   byte = 2 // body: request; "send me your record"
	kindState     byte = 3 // body: state; every record the sender holds (push/pull)
	kindReply     byte = 4 // body: one encoded record, the answer to a request for the sender's own record
	kindRecords   byte = 5 // body: state; the records a request named, as far as the sender holds them
)

const (
	metaVersion, metaDigest, metaSize                  protowire.Number = 1, 2, 3
	requestFrom, requestAddr, requestPort, requestWant protowire.Number = 1, 2, 3, 4
	stateRecord                                        protowire.Number = 1
)

// maxBroadcastBytes is the largest record sent as a gossip broadcast: what fits in one memberlist packet (1400
// bytes by default) after encryption, label and framing. Larger records travel as direct replies.
const maxBroadcastBytes = 1200

// maxStateRecords bounds the records of one push/pull state (memberlist bounds its bytes).
const maxStateRecords = 8192

// advert is what a node advertises in its memberlist metadata about the record it publishes.
type advert struct {
	version uint64
	digest  [sha256.Size]byte
	size    int
}

func advertOf(raw []byte, version uint64) advert {
	return advert{version: version, digest: sha256.Sum256(raw), size: len(raw)}
}

func encodeMeta(a advert) []byte {
	b := appendHeader(make([]byte, 0, 64))
	b = pbwire.AppendNonZero(b, metaVersion, a.version)
	b = pbwire.AppendBytes(b, metaDigest, a.digest[:])
	return pbwire.AppendNonZero(b, metaSize, uint64(a.size))
}

// decodeMeta reads a node's metadata; ok is false when the node advertises no record.
func decodeMeta(b []byte) (a advert, ok bool, err error) {
	if len(b) == 0 {
		return a, false, nil
	}
	body, err := checkHeader(b)
	if err != nil {
		return a, false, err
	}
	var digest []byte
	err = eachField(body, func(f pbwire.Field) error {
		var err error
		var v uint64
		switch f.Num {
		case metaVersion:
			a.version, err = f.Uint(math.MaxUint64)
		case metaDigest:
			digest, err = f.Bytes()
		case metaSize:
			v, err = f.Uint(math.MaxInt32)
			a.size = int(v)
		}
		return err
	})
	if err != nil {
		return advert{}, false, err
	}
	if len(digest) != sha256.Size {
		return advert{}, false, drop(reasonMalformed, "metadata digest of %d bytes", len(digest))
	}
	copy(a.digest[:], digest)
	return a, true, nil
}

func encodeMessage(kind byte, body []byte) []byte {
	b := appendHeader(make([]byte, 0, 3+len(body)))
	return append(append(b, kind), body...)
}

func decodeMessage(b []byte) (kind byte, body []byte, err error) {
	rest, err := checkHeader(b)
	if err != nil {
		return 0, nil, err
	}
	if len(rest) == 0 {
		return 0, nil, drop(reasonMalformed, "message without a kind")
	}
	return rest[0], rest[1:], nil
}

// maxWant bounds the records one request names; maxAnswerBytes the records sent back for it.
const (
	maxWant        = 256
	maxAnswerBytes = 4 << 20
)

// request asks a node for its own record (want empty) or for the records of the nodes named in want. It carries
// the requester's gossip address for the reply, used when the requester is not (yet) an alive member in the
// answering node's view.
type request struct {
	from string
	addr netip.AddrPort
	want []string
}

func encodeRequest(r request) []byte {
	b := pbwire.AppendNonEmpty(nil, requestFrom, r.from)
	if r.addr.IsValid() {
		b = pbwire.AppendBytes(b, requestAddr, r.addr.Addr().AsSlice())
		b = pbwire.AppendNonZero(b, requestPort, uint64(r.addr.Port()))
	}
	for _, w := range r.want {
		b = pbwire.AppendNonEmpty(b, requestWant, w)
	}
	return encodeMessage(kindRequest, b)
}

func decodeRequest(body []byte) (request, error) {
	var r request
	var addr netip.Addr
	var port uint64
	err := eachField(body, func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case requestFrom:
			r.from, err = f.Str()
		case requestAddr:
			var b []byte
			if b, err = f.Bytes(); err == nil {
				addr, _ = netip.AddrFromSlice(b)
			}
		case requestPort:
			port, err = f.Uint(math.MaxUint16)
		case requestWant:
			if len(r.want) == maxWant {
				return drop(reasonTooLarge, "a request for more than %d records", maxWant)
			}
			var w string
			if w, err = f.Str(); err == nil {
				r.want = append(r.want, w)
			}
		}
		return err
	})
	if err != nil {
		return request{}, err
	}
	if !config.IsDNSLabel(r.from) {
		return request{}, drop(reasonInvalid, "request from %q", r.from)
	}
	if addr.IsValid() && port != 0 {
		r.addr = netip.AddrPortFrom(addr.Unmap(), uint16(port))
	}
	return r, nil
}

func encodeState(records [][]byte) []byte { return encodeMessage(kindState, stateBody(records)) }

// stateBody lists records, for a push/pull (kindState) or an answer to a request (kindRecords).
func stateBody(records [][]byte) []byte {
	var body []byte
	for _, r := range records {
		body = pbwire.AppendBytes(body, stateRecord, r)
	}
	return body
}

// decodeState splits a push/pull state into its encoded records, each still to be decoded on its own.
func decodeState(body []byte) ([][]byte, error) {
	var out [][]byte
	err := eachField(body, func(f pbwire.Field) error {
		if f.Num != stateRecord {
			return nil
		}
		if len(out) == maxStateRecords {
			return drop(reasonTooLarge, "more than %d records", maxStateRecords)
		}
		b, err := f.Bytes()
		out = append(out, b)
		return err
	})
	return out, err
}
