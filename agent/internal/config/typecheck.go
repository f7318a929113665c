package config

import (
	"bytes"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// typeProblems finds every value of the file whose type does not fit its key. BurntSushi/toml stops at the first
// such value; validate must report them all in one pass, so after a type error the document is decoded generically
// and each value is checked on its own against the field it would fill. Unknown keys are left to
// undecodedProblems.
func typeProblems(path, src string, kl keyLines) Problems {
	var doc map[string]any
	if _, err := toml.Decode(src, &doc); err != nil {
		return nil // not a type error: the caller reports it
	}
	var ps Problems
	checkStruct(reflect.TypeOf(File{}), doc, "", func(key string, err error) {
		msg := err.Error()
		if m := lastKeyRE.FindStringSubmatch(msg); m != nil {
			msg = typeMessage(m[2])
		}
		ps = append(ps, Problem{File: path, Line: kl.Lookup(key), Key: key, Msg: msg})
	})
	sortProblems(ps)
	return ps
}

// checkStruct checks the values of table m against the fields of struct type t.
func checkStruct(t reflect.Type, m map[string]any, prefix string, report func(key string, err error)) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct && f.Tag.Get("toml") == "" {
			checkStruct(f.Type, m, prefix, report) // an embedded struct's keys are the table's own
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		v, ok := m[name]
		if !ok {
			continue
		}
		key := join(prefix, name)
		switch {
		case f.Type.Kind() == reflect.Struct && isTable(v):
			checkStruct(f.Type, v.(map[string]any), key, report)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct && isTableArray(v):
			for j, el := range tables(v) {
				checkStruct(f.Type.Elem(), el, key+"["+strconv.Itoa(j)+"]", report)
			}
		default:
			if err := checkValue(f.Type, v); err != nil {
				report(key, err)
			}
		}
	}
}

func isTable(v any) bool { _, ok := v.(map[string]any); return ok }

func isTableArray(v any) bool {
	switch v.(type) {
	case []map[string]any:
		return true
	case []any:
		for _, el := range v.([]any) {
			if !isTable(el) {
				return false
			}
		}
		return true
	}
	return false
}

func tables(v any) []map[string]any {
	if ts, ok := v.([]map[string]any); ok {
		return ts
	}
	var out []map[string]any
	for _, el := range v.([]any) {
		out = append(out, el.(map[string]any))
	}
	return out
}

// checkValue decodes v alone into a value of type t, as the whole file would: the library's own rules and message.
func checkValue(t reflect.Type, v any) error {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(map[string]any{"v": v}); err != nil {
		return fmt.Errorf("cannot be checked: %w", err)
	}
	holder := reflect.New(reflect.StructOf([]reflect.StructField{{Name: "V", Type: t, Tag: `toml:"v"`}}))
	_, err := toml.Decode(buf.String(), holder.Interface())
	return err
}
