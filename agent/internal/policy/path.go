package policy

import (
	"strconv"
	"strings"
)

// fieldPath is the path of a field inside a document: keys and list indices.
type fieldPath []pathSeg

type pathSeg struct {
	key   string
	index int // used when key is ""
}

func (p fieldPath) key(k string) fieldPath {
	out := make(fieldPath, len(p), len(p)+1)
	copy(out, p)
	return append(out, pathSeg{key: k})
}

func (p fieldPath) index(i int) fieldPath {
	out := make(fieldPath, len(p), len(p)+1)
	copy(out, p)
	return append(out, pathSeg{index: i})
}

// String spells the path as kubectl does: "spec.rules[0].from", with keys that are not plain identifiers
// (label keys) in brackets: spec.selector.matchLabels["app.kubernetes.io/name"].
func (p fieldPath) String() string {
	var b strings.Builder
	for i, s := range p {
		switch {
		case s.key == "":
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.index))
			b.WriteByte(']')
		case plainKey(s.key):
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s.key)
		default:
			b.WriteByte('[')
			b.WriteString(strconv.Quote(s.key))
			b.WriteByte(']')
		}
	}
	return b.String()
}

// plainKey: starts with a letter, then letters, digits, '_' and '-'; other keys (label keys, port
// numbers) are written in brackets.
func plainKey(k string) bool {
	if k == "" || !(k[0] >= 'a' && k[0] <= 'z' || k[0] >= 'A' && k[0] <= 'Z') {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
