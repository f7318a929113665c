package xds

import (
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ambient-agent/ambient-agent/agent/internal/pbwire"
)

// The resources istiod sends are protobuf messages of Istio's workload API. They are read here by hand with
// pbwire, from the field numbers of workload.proto and authorization.proto (istio.io/istio
// pkg/workloadapi, the same files ztunnel builds from in its proto/ directory), so that the agent's module does
// not depend on istio.io/istio. Unknown fields are skipped, as protobuf requires; a known field with the wrong
// wire type, a truncated message, invalid UTF-8 or an out-of-range value is an error that rejects the resource.

// maxDepth bounds nesting; the workload API nests at most five messages deep.
const maxDepth = 8

// enum reads an enum value known to this decoder: a value added to Istio's API later is an error, as in
// ztunnel, rather than a guess.
func enum(f pbwire.Field, name string, known uint64) (uint64, error) {
	if f.Typ != protowire.VarintType {
		return 0, f.WrongType()
	}
	if f.U > known {
		return 0, fmt.Errorf("field %d: unknown %s %d", f.Num, name, int64(f.U))
	}
	return f.U, nil
}

// lenientEnum reads an enum that a newer istiod may extend and that ztunnel
// reads leniently: a value past the last one known reads as 0 (the enum's
// default), so the resource is kept.
func lenientEnum(f pbwire.Field) (uint64, error) {
	if f.Typ != protowire.VarintType {
		return 0, f.WrongType()
	}
	return f.U, nil
}

// uints appends the values of a repeated uint32 field, packed or not.
func uints(f pbwire.Field, dst []uint32) ([]uint32, error) {
	switch f.Typ {
	case protowire.VarintType:
		v, err := f.Uint(math.MaxUint32)
		return append(dst, uint32(v)), err
	case protowire.BytesType:
		b := f.B
		for len(b) > 0 {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return dst, fmt.Errorf("field %d: %w", f.Num, protowire.ParseError(n))
			}
			if v > math.MaxUint32 {
				return dst, fmt.Errorf("field %d: %d is out of range", f.Num, v)
			}
			dst = append(dst, uint32(v))
			b = b[n:]
		}
		return dst, nil
	}
	return dst, f.WrongType()
}
