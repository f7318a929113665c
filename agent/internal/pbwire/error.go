package pbwire

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Kind names one way wire input can be wrong.
type Kind uint8

const (
	BadTag     Kind = iota + 1 // a truncated or invalid field tag; Err says which
	BadValue                   // a truncated or invalid value of field Num; Err says which
	WrongType                  // field Num came with wire type Typ, not its own
	NotUTF8                    // string field Num is not UTF-8
	OutOfRange                 // field Num holds Value, more than Max
	BadAddress                 // address field Num is Value bytes long, not 4 or 16
)

// Error is a decoding failure. Its message names the field; callers with their own vocabulary of failures
// switch on Kind.
type Error struct {
	Kind  Kind
	Num   protowire.Number
	Typ   protowire.Type
	Value uint64
	Max   uint64
	Err   error // protowire's parse error, for BadTag and BadValue
}

func (e *Error) Error() string {
	switch e.Kind {
	case BadTag:
		return fmt.Sprintf("field tag: %v", e.Err)
	case BadValue:
		return fmt.Sprintf("field %d: %v", e.Num, e.Err)
	case WrongType:
		return fmt.Sprintf("field %d: wire type %d is not the field's type", e.Num, e.Typ)
	case NotUTF8:
		return fmt.Sprintf("field %d: invalid UTF-8", e.Num)
	case OutOfRange:
		return fmt.Sprintf("field %d: %d is out of range (at most %d)", e.Num, e.Value, e.Max)
	case BadAddress:
		return fmt.Sprintf("field %d: an address of %d bytes (want 4 or 16)", e.Num, e.Value)
	}
	return fmt.Sprintf("field %d: invalid", e.Num)
}

func (e *Error) Unwrap() error { return e.Err }
