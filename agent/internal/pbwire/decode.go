package pbwire

import (
	"net/netip"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field is one decoded protobuf field: U holds varint and fixed values, B length-delimited ones (aliasing the
// message's bytes). A group is skipped whole and leaves both empty.
type Field struct {
	Num protowire.Number
	Typ protowire.Type
	U   uint64
	B   []byte
}

// Each walks the fields of a message in wire order and calls visit for each. A malformed tag or value is an
// *Error; an error from visit ends the walk and is returned as it is.
func Each(b []byte, visit func(Field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return &Error{Kind: BadTag, Err: protowire.ParseError(n)}
		}
		b = b[n:]
		f := Field{Num: num, Typ: typ}
		switch typ {
		case protowire.VarintType:
			f.U, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			f.B, n = protowire.ConsumeBytes(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			f.U = uint64(v)
		case protowire.Fixed64Type:
			f.U, n = protowire.ConsumeFixed64(b)
		default: // groups, and the reserved types that ConsumeFieldValue refuses
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return &Error{Kind: BadValue, Num: num, Err: protowire.ParseError(n)}
		}
		b = b[n:]
		if err := visit(f); err != nil {
			return err
		}
	}
	return nil
}

// WrongType is the error for a known field sent with another wire type than its own.
func (f Field) WrongType() error { return &Error{Kind: WrongType, Num: f.Num, Typ: f.Typ} }

// Each visits the fields of the embedded message f holds (a length-delimited field), as Each does.
func (f Field) Each(visit func(Field) error) error {
	b, err := f.Bytes()
	if err != nil {
		return err
	}
	return Each(b, visit)
}

// Bytes returns a length-delimited value: bytes or an embedded message.
func (f Field) Bytes() ([]byte, error) {
	if f.Typ != protowire.BytesType {
		return nil, f.WrongType()
	}
	return f.B, nil
}

// Str returns a string, which protobuf requires to be UTF-8.
func (f Field) Str() (string, error) {
	if f.Typ != protowire.BytesType {
		return "", f.WrongType()
	}
	if !utf8.Valid(f.B) {
		return "", &Error{Kind: NotUTF8, Num: f.Num}
	}
	return string(f.B), nil
}

// Uint returns a varint no larger than limit: uint32 fields, enums (int32 on the wire) and the agent's own limits.
func (f Field) Uint(limit uint64) (uint64, error) {
	if f.Typ != protowire.VarintType {
		return 0, f.WrongType()
	}
	if f.U > limit {
		return 0, &Error{Kind: OutOfRange, Num: f.Num, Value: f.U, Max: limit}
	}
	return f.U, nil
}

// Bool returns a bool: any non-zero varint is true, as protobuf decoders read it.
func (f Field) Bool() (bool, error) {
	if f.Typ != protowire.VarintType {
		return false, f.WrongType()
	}
	return f.U != 0, nil
}

// Addr returns an IP address as Istio's workload API encodes it: 4 or 16 raw bytes. A 4-in-6 address is unmapped.
func (f Field) Addr() (netip.Addr, error) {
	if f.Typ != protowire.BytesType {
		return netip.Addr{}, f.WrongType()
	}
	a, ok := netip.AddrFromSlice(f.B)
	if !ok {
		return netip.Addr{}, &Error{Kind: BadAddress, Num: f.Num, Value: uint64(len(f.B))}
	}
	return a.Unmap(), nil
}
