package discovery

import (
	"errors"
	"fmt"

	"github.com/ambient-agent/ambient-agent/agent/internal/pbwire"
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

// IsRejection reports whether a drop reason is input refused as wrong or hostile, not a race of normal
// operation (a late relay, a record of a node not known yet, this node's own).
func IsRejection(reason string) bool {
	return reason != reasonStale && reason != reasonUnknownNode && reason != reasonSelf
}

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

// eachField walks a message with pbwire.Each. What pbwire refuses, in the walk or in visit's reads of the
// fields, comes back as a dropError.
func eachField(b []byte, visit func(f pbwire.Field) error) error {
	return dropWire(pbwire.Each(b, visit))
}

// eachIn is eachField over the embedded message f holds.
func eachIn(f pbwire.Field, visit func(f pbwire.Field) error) error {
	return dropWire(f.Each(visit))
}

// dropWire gives a pbwire error its drop reason: a value out of the agent's range is invalid, anything else
// that does not decode is malformed. Other errors pass through.
func dropWire(err error) error {
	var e *pbwire.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Kind {
	case pbwire.BadTag:
		return drop(reasonMalformed, "field tag: %v", e.Err)
	case pbwire.WrongType:
		return drop(reasonMalformed, "field %d has wire type %d", e.Num, e.Typ)
	case pbwire.NotUTF8:
		return drop(reasonMalformed, "field %d is not UTF-8", e.Num)
	case pbwire.OutOfRange:
		return drop(reasonInvalid, "field %d: %d is out of range", e.Num, e.Value)
	case pbwire.BadAddress:
		return drop(reasonInvalid, "an address of %d bytes", e.Value)
	}
	return drop(reasonMalformed, "field %d: %v", e.Num, e.Err) // pbwire.BadValue
}
