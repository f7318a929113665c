package config

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Load reads, strictly decodes and validates the file at path. On failure the
// error is a Problems value listing everything wrong (or an I/O error).
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, src)
}

// Parse is Load for a file already in memory; path is used in messages.
func Parse(path string, src []byte) (*Config, error) {
	kl := indexKeyLines(string(src))
	var f File
	md, err := toml.Decode(string(src), &f)
	if err != nil {
		var pe toml.ParseError
		if !errors.As(err, &pe) { // a value of the wrong type: find them all, not only the first
			if ps := typeProblems(path, string(src), kl); len(ps) > 0 {
				return nil, ps
			}
		}
		return nil, Problems{decodeProblem(path, err, kl)}
	}
	if ps := undecodedProblems(path, md, kl); len(ps) > 0 {
		return nil, ps
	}
	cfg, ps := Build(f)
	if len(ps) > 0 {
		for i := range ps {
			ps[i].File = path
			ps[i].Line = kl.Lookup(ps[i].Key)
		}
		sortProblems(ps)
		return nil, ps
	}
	cfg.Path = path
	return cfg, nil
}

// lastKeyRE extracts the key path from BurntSushi/toml's type errors, which are
// plain errors of the form `toml: line N (last key "a.b"): message`.
var lastKeyRE = regexp.MustCompile(`^toml: (?:line \d+ )?\(last key "([^"]*)"\): (.*)$`)

func decodeProblem(path string, err error, kl keyLines) Problem {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return Problem{File: path, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
	}
	if m := lastKeyRE.FindStringSubmatch(err.Error()); m != nil {
		key := m[1]
		// The decoder's key has no array indices; report the first occurrence.
		if occ := kl.Occurrences(key); len(occ) > 0 {
			key = occ[0]
		}
		return Problem{File: path, Line: kl.Lookup(key), Key: key, Msg: typeMessage(m[2])}
	}
	return Problem{File: path, Msg: err.Error()}
}

func typeMessage(msg string) string {
	// "incompatible types: TOML value has type X; destination has type Y"
	msg = strings.TrimPrefix(msg, "incompatible types: ")
	return "wrong type: " + msg
}

// undecodedProblems reports keys of the file that no field of File consumed.
// Only the innermost unknown keys are reported: for an unknown table with keys,
// the keys are named, not the table as well.
func undecodedProblems(path string, md toml.MetaData, kl keyLines) Problems {
	undecoded := md.Undecoded()
	names := make(map[string]bool, len(undecoded))
	for _, k := range undecoded {
		names[k.String()] = true
	}
	var ps Problems
	seen := map[string]bool{}
	for _, k := range undecoded {
		name := k.String()
		if hasChild(name, names) || seen[name] {
			continue
		}
		seen[name] = true
		occ := kl.Occurrences(name)
		if len(occ) == 0 {
			occ = []string{name}
		}
		for _, key := range occ {
			ps = append(ps, Problem{File: path, Line: kl.Lookup(key), Key: key, Msg: unknownMessage(md, k)})
		}
	}
	sortProblems(ps)
	return ps
}

func unknownMessage(md toml.MetaData, k toml.Key) string {
	if t := md.Type(k...); t == "Hash" || t == "ArrayHash" {
		return "unknown table"
	}
	return "unknown key"
}

func hasChild(name string, names map[string]bool) bool {
	for other := range names {
		if strings.HasPrefix(other, name+".") {
			return true
		}
	}
	return false
}

func sortProblems(ps Problems) {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Line != ps[j].Line {
			return ps[i].Line < ps[j].Line
		}
		return ps[i].Key < ps[j].Key
	})
}
