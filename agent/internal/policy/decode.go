package policy

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// decoder walks one document decoded into JSON values (map[string]any, []any, string, json.Number, bool,
// nil) and turns it into our types, strictly: an unknown field or a value of the wrong type is a Problem
// naming the field path. Problems are collected, never fatal, so one pass reports all of them.
type decoder struct {
	src      Source // File and Doc; Line is filled in per problem
	lines    *lineLocator
	policy   string // "namespace/name" once known
	problems []Problem
}

func (d *decoder) fail(p fieldPath, format string, args ...any) {
	src := d.src
	if d.lines != nil {
		src.Line = d.lines.line(p)
	}
	d.problems = append(d.problems, Problem{Source: src, Policy: d.policy, Field: p.String(), Msg: fmt.Sprintf(format, args...)})
}

// object returns v as an object; nil (and no problem) when v is null.
func (d *decoder) object(p fieldPath, v any) map[string]any {
	switch t := v.(type) {
	case nil:
		return nil
	case map[string]any:
		return t
	}
	d.fail(p, "must be an object, not %s", describeValue(v))
	return nil
}

// fields reports every key of m that is not known, in sorted order.
func (d *decoder) fields(p fieldPath, m map[string]any, known ...string) {
	var unknown []string
	for k := range m {
		if !slices.Contains(known, k) {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		d.fail(p.key(k), "unknown field (known: %s)", strings.Join(known, ", "))
	}
}

func (d *decoder) str(p fieldPath, v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	}
	d.fail(p, "must be a string, not %s (quote it)", describeValue(v))
	return ""
}

func (d *decoder) list(p fieldPath, v any) []any {
	switch t := v.(type) {
	case nil:
		return nil
	case []any:
		return t
	}
	d.fail(p, "must be a list, not %s", describeValue(v))
	return nil
}

func (d *decoder) strList(p fieldPath, v any) []string {
	items := d.list(p, v)
	if len(items) == 0 {
		return nil
	}
	out := make([]string, 0, len(items))
	for i, it := range items {
		if s, ok := it.(string); ok {
			out = append(out, s)
			continue
		}
		d.fail(p.index(i), "must be a string, not %s (quote it)", describeValue(it))
	}
	return out
}

// portList is a list of ports. Istio's schema says strings; a bare integer is accepted too, since it
// cannot be misread.
func (d *decoder) portList(p fieldPath, v any) []string {
	items := d.list(p, v)
	if len(items) == 0 {
		return nil
	}
	out := make([]string, 0, len(items))
	for i, it := range items {
		switch t := it.(type) {
		case string:
			out = append(out, t)
		case json.Number:
			out = append(out, t.String())
		default:
			d.fail(p.index(i), "must be a port number, not %s", describeValue(it))
		}
	}
	return out
}

func (d *decoder) strMap(p fieldPath, v any) map[string]string {
	m := d.object(p, v)
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for _, k := range sortedKeys(m) {
		if s, ok := m[k].(string); ok {
			out[k] = s
			continue
		}
		d.fail(p.key(k), "must be a string, not %s (quote it)", describeValue(m[k]))
	}
	return out
}

func describeValue(v any) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean (" + strconv.FormatBool(t) + ")"
	case json.Number:
		return "a number (" + t.String() + ")"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
