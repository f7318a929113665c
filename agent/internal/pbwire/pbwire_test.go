package pbwire_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ambient-agent/ambient-agent/agent/internal/pbwire"
)

func fields(t *testing.T, b []byte) []pbwire.Field {
	t.Helper()
	var fs []pbwire.Field
	if err := pbwire.Each(b, func(f pbwire.Field) error { fs = append(fs, f); return nil }); err != nil {
		t.Fatalf("Each: %v", err)
	}
	return fs
}

func TestEachReadsEveryWireType(t *testing.T) {
	b := pbwire.AppendUint(nil, 1, 300)
	b = pbwire.AppendString(b, 2, "hi")
	b = protowire.AppendFixed32(protowire.AppendTag(b, 3, protowire.Fixed32Type), 7)
	b = protowire.AppendFixed64(protowire.AppendTag(b, 4, protowire.Fixed64Type), math.MaxUint64)
	b = protowire.AppendTag(b, 5, protowire.StartGroupType) // a group, skipped whole
	b = pbwire.AppendUint(b, 1, 9)
	b = protowire.AppendTag(b, 5, protowire.EndGroupType)
	b = pbwire.AppendMessage(b, 6, nil)
	fs := fields(t, b)
	want := []pbwire.Field{
		{Num: 1, Typ: protowire.VarintType, U: 300},
		{Num: 2, Typ: protowire.BytesType, B: []byte("hi")},
		{Num: 3, Typ: protowire.Fixed32Type, U: 7},
		{Num: 4, Typ: protowire.Fixed64Type, U: math.MaxUint64},
		{Num: 5, Typ: protowire.StartGroupType},
		{Num: 6, Typ: protowire.BytesType, B: []byte{}},
	}
	if len(fs) != len(want) {
		t.Fatalf("got %d fields %+v, want %d", len(fs), fs, len(want))
	}
	for i := range want {
		if fs[i].Num != want[i].Num || fs[i].Typ != want[i].Typ || fs[i].U != want[i].U || !bytes.Equal(fs[i].B, want[i].B) {
			t.Errorf("field %d: got %+v, want %+v", i, fs[i], want[i])
		}
	}
}

func TestEachStopsAtVisitError(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := pbwire.Each(pbwire.AppendUint(pbwire.AppendUint(nil, 1, 1), 2, 2), func(pbwire.Field) error { n++; return stop })
	if err != stop || n != 1 {
		t.Fatalf("got %v after %d fields, want the visit error after 1", err, n)
	}
}

func TestEachRejectsMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		kind pbwire.Kind
		msg  string // our words, ": ", then protowire's
	}{
		{"truncated tag", []byte{0x80}, pbwire.BadTag, "field tag: unexpected EOF"},
		{"field number zero", []byte{0x00}, pbwire.BadTag, "field tag: invalid field number"},
		{"truncated varint", []byte{0x08, 0x80}, pbwire.BadValue, "field 1: unexpected EOF"},
		{"varint over 64 bits", append([]byte{0x08}, bytes.Repeat([]byte{0xff}, 10)...), pbwire.BadValue,
			"field 1: variable length integer overflow"},
		{"bytes past the end", []byte{0x12, 0x05, 'a'}, pbwire.BadValue, "field 2: unexpected EOF"},
		{"truncated fixed32", []byte{0x1d, 1, 2}, pbwire.BadValue, "field 3: unexpected EOF"},
		{"truncated fixed64", []byte{0x21, 1, 2, 3}, pbwire.BadValue, "field 4: unexpected EOF"},
		{"reserved wire type", []byte{0x0e}, pbwire.BadValue, "field 1: cannot parse reserved wire type"},
		{"unopened end group", []byte{0x0c}, pbwire.BadValue, "field 1: mismatching end group marker"},
		{"unclosed group", []byte{0x0b, 0x08, 0x01}, pbwire.BadValue, "field 1: unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := pbwire.Each(tc.b, func(pbwire.Field) error { return nil })
			var e *pbwire.Error
			// protowire's own words come after a "proto:" prefix that it varies on purpose.
			ours, theirs, _ := strings.Cut(tc.msg, ": ")
			if !errors.As(err, &e) || e.Kind != tc.kind ||
				!strings.HasPrefix(err.Error(), ours+": ") || !strings.HasSuffix(err.Error(), theirs) {
				t.Fatalf("got %v, want a %d error %q", err, tc.kind, tc.msg)
			}
		})
	}
	// The parse error stays reachable, as it was when the decoders wrapped it with %w.
	if err := pbwire.Each([]byte{0x08}, func(pbwire.Field) error { return nil }); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want one that is io.ErrUnexpectedEOF", err)
	}
}

func TestAccessors(t *testing.T) {
	v := pbwire.Field{Num: 7, Typ: protowire.VarintType, U: 70000}
	s := pbwire.Field{Num: 8, Typ: protowire.BytesType, B: []byte("ok")}
	if got, err := v.Uint(math.MaxUint32); got != 70000 || err != nil {
		t.Errorf("Uint: %d, %v", got, err)
	}
	if got, err := v.Bool(); !got || err != nil {
		t.Errorf("Bool: %v, %v", got, err)
	}
	if got, err := s.Str(); got != "ok" || err != nil {
		t.Errorf("Str: %q, %v", got, err)
	}
	if got, err := s.Bytes(); string(got) != "ok" || err != nil {
		t.Errorf("Bytes: %q, %v", got, err)
	}
	for _, tc := range []struct{ b, want string }{
		{"\x0a\x00\x00\x01", "10.0.0.1"},
		{string(netip.MustParseAddr("fd00::1").AsSlice()), "fd00::1"},
		{string(netip.MustParseAddr("::ffff:10.0.0.1").AsSlice()), "10.0.0.1"}, // unmapped
	} {
		a, err := pbwire.Field{Num: 3, Typ: protowire.BytesType, B: []byte(tc.b)}.Addr()
		if err != nil || a.String() != tc.want {
			t.Errorf("Addr(% x) = %v, %v; want %s", tc.b, a, err, tc.want)
		}
	}
}

func TestAccessorsRejectBadValues(t *testing.T) {
	v := pbwire.Field{Num: 7, Typ: protowire.VarintType, U: 70000}
	s := pbwire.Field{Num: 8, Typ: protowire.BytesType, B: []byte{0xff, 0xfe}}
	f32 := pbwire.Field{Num: 9, Typ: protowire.Fixed32Type, U: 1}
	wrongType := func(f pbwire.Field) string {
		return fmt.Sprintf("field %d: wire type %d is not the field's type", f.Num, f.Typ)
	}
	for _, tc := range []struct {
		name string
		err  error
		kind pbwire.Kind
		msg  string
	}{
		{"out of range", second(v.Uint(math.MaxUint16)), pbwire.OutOfRange, "field 7: 70000 is out of range (at most 65535)"},
		{"invalid UTF-8", second(s.Str()), pbwire.NotUTF8, "field 8: invalid UTF-8"},
		{"address of 2 bytes", second(s.Addr()), pbwire.BadAddress, "field 8: an address of 2 bytes (want 4 or 16)"},
		{"empty address", second(pbwire.Field{Num: 8, Typ: protowire.BytesType}.Addr()), pbwire.BadAddress,
			"field 8: an address of 0 bytes (want 4 or 16)"},
		{"string as varint", second(v.Str()), pbwire.WrongType, wrongType(v)},
		{"bytes as varint", second(v.Bytes()), pbwire.WrongType, wrongType(v)},
		{"address as varint", second(v.Addr()), pbwire.WrongType, wrongType(v)},
		{"uint as bytes", second(s.Uint(math.MaxUint64)), pbwire.WrongType, wrongType(s)},
		{"bool as bytes", second(s.Bool()), pbwire.WrongType, wrongType(s)},
		{"uint as fixed32", second(f32.Uint(math.MaxUint64)), pbwire.WrongType, wrongType(f32)},
	} {
		var e *pbwire.Error
		if !errors.As(tc.err, &e) || e.Kind != tc.kind || tc.err.Error() != tc.msg {
			t.Errorf("%s: got %v, want a %d error %q", tc.name, tc.err, tc.kind, tc.msg)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestEncoders(t *testing.T) {
	var b []byte
	b = pbwire.AppendNonEmpty(b, 1, "")
	b = pbwire.AppendNonZero(b, 2, 0)
	if len(b) != 0 {
		t.Fatalf("zero singular values were written: % x", b)
	}
	b = pbwire.AppendString(b, 1, "")
	b = pbwire.AppendUint(b, 2, 0)
	b = pbwire.AppendNonEmpty(b, 3, "s")
	b = pbwire.AppendNonZero(b, 4, 1<<40)
	b = pbwire.AppendBytes(b, 5, []byte{1, 2})
	b = pbwire.AppendMessage(b, 6, pbwire.AppendUint(nil, 1, 5))
	want := []byte{0x0a, 0x00, 0x10, 0x00, 0x1a, 0x01, 's', 0x20, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0x2a, 0x02, 1, 2,
		0x32, 0x02, 0x08, 0x05}
	if !bytes.Equal(b, want) {
		t.Fatalf("got % x\nwant % x", b, want)
	}
	fs := fields(t, b)
	if len(fs) != 6 || fs[3].U != 1<<40 || fields(t, fs[5].B)[0].U != 5 {
		t.Fatalf("round trip: %+v", fs)
	}
}

// FuzzEach: any input walks to the end or stops with an *Error, and every accessor on every field returns a
// value or an *Error. Never a panic.
func FuzzEach(f *testing.F) {
	f.Add(pbwire.AppendMessage(pbwire.AppendString(pbwire.AppendUint(nil, 1, 1), 2, "x"), 3, []byte{10, 0, 0, 1}))
	f.Add([]byte{0x80})
	f.Add([]byte{0x0b, 0x08, 0x01, 0x0c, 0x1d, 1, 2, 3, 4, 0x21, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(err error) {
			var e *pbwire.Error
			if err != nil && !errors.As(err, &e) {
				t.Fatalf("not a *pbwire.Error: %v", err)
			}
			if err != nil && e.Error() == "" {
				t.Fatal("an error without a message")
			}
		}
		check(pbwire.Each(b, func(f pbwire.Field) error {
			check(second(f.Bytes()))
			check(second(f.Str()))
			check(second(f.Uint(math.MaxUint16)))
			check(second(f.Bool()))
			check(second(f.Addr()))
			return nil
		}))
	})
}
