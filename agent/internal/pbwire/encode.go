package pbwire

import "google.golang.org/protobuf/encoding/protowire"

// The Append functions write one field whatever its value, for repeated fields, map entries and values whose
// presence matters; AppendNonEmpty and AppendNonZero write proto3 singular fields, left out when zero.

// AppendString writes a string field, even an empty one.
func AppendString(b []byte, num protowire.Number, s string) []byte {
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

// AppendBytes writes a bytes field, even an empty one.
func AppendBytes(b []byte, num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
}

// AppendMessage writes an embedded message, encoded beforehand into msg.
func AppendMessage(b []byte, num protowire.Number, msg []byte) []byte {
	return AppendBytes(b, num, msg)
}

// AppendUint writes a varint field, even a zero one.
func AppendUint(b []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

// AppendNonEmpty writes a proto3 singular string, left out when empty.
func AppendNonEmpty(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return AppendString(b, num, s)
}

// AppendNonZero writes a proto3 singular varint, left out when zero.
func AppendNonZero(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return AppendUint(b, num, v)
}
