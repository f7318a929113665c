package xds

import (
	"fmt"
	"math"
	"net/netip"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The resources istiod sends are protobuf messages of Istio's workload API. They are read here by hand with
// protowire, from the field numbers of workload.proto and authorization.proto (istio.io/istio
// pkg/workloadapi, the same files ztunnel builds from in its proto/ directory), so that the agent's module does
// not depend on istio.io/istio. Unknown fields are skipped, as protobuf requires; a known field with the wrong
// wire type, a truncated message, invalid UTF-8 or an out-of-range value is an error that rejects the resource.

// maxDepth bounds nesting; the workload API nests at most five messages deep.
const maxDepth = 8

// field is one decoded protobuf field: u holds varint and fixed values, b length-delimited ones.
type field struct {
	num protowire.Number
	typ protowire.Type
	u   uint64
	b   []byte
}

// eachField walks the fields of a message in wire order.
func eachField(b []byte, visit func(f field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("field tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.u, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			f.b, n = protowire.ConsumeBytes(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			f.u = uint64(v)
		case protowire.Fixed64Type:
			f.u, n = protowire.ConsumeFixed64(b)
		default: // groups: skipped whole
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := visit(f); err != nil {
			return err
		}
	}
	return nil
}

func (f field) wrongType() error {
	return fmt.Errorf("field %d: wire type %d is not the field's type", f.num, f.typ)
}

func (f field) message() ([]byte, error) {
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
		return "", fmt.Errorf("field %d: invalid UTF-8", f.num)
	}
	return string(f.b), nil
}

func (f field) boolean() (bool, error) {
	if f.typ != protowire.VarintType {
		return false, f.wrongType()
	}
	return f.u != 0, nil
}

// uint reads a varint no larger than limit (uint32 fields and enums: proto3 enums are int32 on the wire).
func (f field) uint(limit uint64) (uint64, error) {
	if f.typ != protowire.VarintType {
		return 0, f.wrongType()
	}
	if f.u > limit {
		return 0, fmt.Errorf("field %d: %d is out of range (at most %d)", f.num, f.u, limit)
	}
	return f.u, nil
}

// enum reads an enum value known to this decoder: a value added to Istio's API later is an error, as in
// ztunnel, rather than a guess.
func (f field) enum(name string, known uint64) (uint64, error) {
	if f.typ != protowire.VarintType {
		return 0, f.wrongType()
	}
	if f.u > known {
		return 0, fmt.Errorf("field %d: unknown %s %d", f.num, name, int64(f.u))
	}
	return f.u, nil
}

// uints appends the values of a repeated uint32 field, packed or not.
func (f field) uints(dst []uint32) ([]uint32, error) {
	switch f.typ {
	case protowire.VarintType:
		v, err := f.uint(math.MaxUint32)
		return append(dst, uint32(v)), err
	case protowire.BytesType:
		b := f.b
		for len(b) > 0 {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return dst, fmt.Errorf("field %d: %w", f.num, protowire.ParseError(n))
			}
			if v > math.MaxUint32 {
				return dst, fmt.Errorf("field %d: %d is out of range", f.num, v)
			}
			dst = append(dst, uint32(v))
			b = b[n:]
		}
		return dst, nil
	}
	return dst, f.wrongType()
}

// ip reads an address as Istio encodes it: 4 or 16 raw bytes.
func (f field) ip() (netip.Addr, error) {
	if f.typ != protowire.BytesType {
		return netip.Addr{}, f.wrongType()
	}
	return ipFromBytes(f.num, f.b)
}

func ipFromBytes(num protowire.Number, b []byte) (netip.Addr, error) {
	if len(b) != 4 && len(b) != 16 {
		return netip.Addr{}, fmt.Errorf("field %d: an address of %d bytes (want 4 or 16)", num, len(b))
	}
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap(), nil
}
