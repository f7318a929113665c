package discovery

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The wire format. Everything discovery sends starts with formatMagic and formatVersion, followed by protobuf wire
// encoding written and read by hand (no generated code, no reflection). Compatible changes add fields, which older
// decoders skip; an incompatible change bumps formatVersion, and a decoder drops what it cannot read with a
// warning.
const (
	formatMagic   = 0xA6
	formatVersion = 1
)

// Why a received record or message was dropped: the closed vocabulary used in errors and warnings.
const (
	reasonMalformed    = "malformed"            // not our format, truncated, or wrong wire types
	reasonTooLarge     = "too_large"            // over the byte or count limits
	reasonIncompatible = "incompatible_version" // a newer format this agent cannot read
	reasonInvalid      = "invalid"              // decodes, but a name, address or reference is not acceptable
	reasonUnknownNode  = "unknown_node"         // about a node that is not a member (or no longer one)
	reasonStale        = "stale"                // older than the record its node advertises
	reasonMismatch     = "digest_mismatch"      // the version its node advertises, but other content: forged
	reasonSelf         = "self"                 // claims to be this node's record
)

// dropError says why input was dropped; reason is one of the reason constants.
type dropError struct {
	reason string
	err    error
}

func (e *dropError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *dropError) Unwrap() error { return e.err }

func drop(reason, format string, args ...any) error {
	return &dropError{reason: reason, err: fmt.Errorf(format, args...)}
}

// reasonOf returns the drop reason of err (malformed if err is not a dropError).
func reasonOf(err error) string {
	var d *dropError
	if errors.As(err, &d) {
		return d.reason
	}
	return reasonMalformed
}

// checkHeader strips the magic and version bytes.
func checkHeader(b []byte) ([]byte, error) {
	switch {
	case len(b) < 2 || b[0] != formatMagic:
		return nil, drop(reasonMalformed, "not an ambient-agent gossip message")
	case b[1] > formatVersion:
		return nil, drop(reasonIncompatible, "format version %d, this agent reads %d", b[1], formatVersion)
	case b[1] < formatVersion:
		return nil, drop(reasonMalformed, "format version %d is not valid", b[1])
	}
	return b[2:], nil
}

func appendHeader(b []byte) []byte { return append(b, formatMagic, formatVersion) }

// field is one decoded protobuf field: u for varints, b for length-delimited values.
type field struct {
	num protowire.Number
	typ protowire.Type
	u   uint64
	b   []byte
}

// eachField walks the fields of a message, skipping the values of unknown wire types.
func eachField(b []byte, visit func(f field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return drop(reasonMalformed, "field tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.u, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			f.b, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return drop(reasonMalformed, "field %d: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := visit(f); err != nil {
			return err
		}
	}
	return nil
}

func (f field) wrongType() error {
	return drop(reasonMalformed, "field %d has wire type %d", f.num, f.typ)
}

func (f field) bytes() ([]byte, error) {
	if f.typ != protowire.BytesType {
		return nil, f.wrongType()
	}
	return f.b, nil
}

func (f field) str() (string, error) {
	if f.typ != protowire.BytesType {
		return "", f.wrongType()
	}
	if !utf8.Valid(f.b) {
		return "", drop(reasonMalformed, "field %d is not UTF-8", f.num)
	}
	return string(f.b), nil
}

// uint returns a varint no larger than max.
func (f field) uint(max uint64) (uint64, error) {
	if f.typ != protowire.VarintType {
		return 0, f.wrongType()
	}
	if f.u > max {
		return 0, drop(reasonInvalid, "field %d: %d is out of range", f.num, f.u)
	}
	return f.u, nil
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendUint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// appendMessage appends a length-delimited sub-message built by enc.
func appendMessage(b []byte, num protowire.Number, enc func([]byte) []byte) []byte {
	return appendBytes(b, num, enc(nil))
}
