package config

import (
	"strconv"
	"strings"
)

// keyLines maps key paths of a TOML document to the line that defines them.
// BurntSushi/toml keeps key positions private, so we index the source ourselves.
// Paths use indices for arrays of tables ("workload[1].name"); Lookup falls back
// to the nearest enclosing key that has a line.
type keyLines struct {
	lines map[string]int
	// plain maps an index-free path ("workload.name") to every indexed path.
	plain map[string][]string
}

func indexKeyLines(src string) keyLines {
	kl := keyLines{lines: map[string]int{}, plain: map[string][]string{}}
	arrayCount := map[string]int{}
	prefix := ""
	inMultiline := "" // the closing delimiter while inside a multi-line string
	depth := 0        // bracket depth of a multi-line array value
	for i, raw := range strings.Split(src, "\n") {
		lineNo := i + 1
		line := strings.TrimSpace(raw)
		if inMultiline != "" {
			if strings.Contains(line, inMultiline) {
				inMultiline = ""
			}
			continue
		}
		if depth > 0 {
			depth += bracketDelta(line)
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		switch {
		case strings.HasPrefix(line, "[["):
			name := joinKey(splitKey(strings.TrimSuffix(strings.TrimSpace(stripComment(line[2:])), "]]")))
			idx := arrayCount[name]
			arrayCount[name]++
			prefix = name + "[" + strconv.Itoa(idx) + "]"
			kl.add(prefix, lineNo)
		case strings.HasPrefix(line, "["):
			name := joinKey(splitKey(strings.TrimSuffix(strings.TrimSpace(stripComment(line[1:])), "]")))
			prefix = kl.resolveTable(name, arrayCount)
			kl.add(prefix, lineNo)
		default:
			eq := strings.IndexByte(line, '=')
			if eq < 0 {
				continue
			}
			key := joinKey(splitKey(line[:eq]))
			kl.add(join(prefix, key), lineNo)
			value := strings.TrimSpace(line[eq+1:])
			for _, delim := range []string{`"""`, `'''`} {
				if strings.HasPrefix(value, delim) && !strings.Contains(value[3:], delim) {
					inMultiline = delim
				}
			}
			if strings.HasPrefix(value, "[") {
				depth = bracketDelta(stripComment(value))
			}
		}
	}
	return kl
}

// resolveTable turns "workload.labels" into "workload[N].labels" when workload is
// an array of tables: a sub-table belongs to the latest element.
func (kl keyLines) resolveTable(name string, arrayCount map[string]int) string {
	parts := strings.Split(name, ".")
	out := ""
	for i, p := range parts {
		out = join(out, p)
		plainSoFar := strings.Join(parts[:i+1], ".")
		if n := arrayCount[plainSoFar]; n > 0 && i < len(parts)-1 {
			out += "[" + strconv.Itoa(n-1) + "]"
		}
	}
	return out
}

func (kl keyLines) add(path string, line int) {
	if _, ok := kl.lines[path]; ok {
		return
	}
	kl.lines[path] = line
	p := plainPath(path)
	kl.plain[p] = append(kl.plain[p], path)
}

// Lookup returns the line of path or of its nearest enclosing key, or 0.
func (kl keyLines) Lookup(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := kl.lines[p]; ok {
			return l
		}
	}
	return 0
}

// Occurrences returns the indexed paths that an index-free path stands for.
func (kl keyLines) Occurrences(plain string) []string {
	return kl.plain[plain]
}

func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

// plainPath drops array indices: "workload[1].name" -> "workload.name".
func plainPath(p string) string {
	var b strings.Builder
	skip := false
	for _, r := range p {
		switch {
		case r == '[':
			skip = true
		case r == ']':
			skip = false
		case !skip:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// splitKey splits a dotted TOML key, honouring quoted parts.
func splitKey(s string) []string {
	var parts []string
	var cur strings.Builder
	quote := rune(0)
	for _, r := range strings.TrimSpace(s) {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote = r
		case r == '.':
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	return append(parts, strings.TrimSpace(cur.String()))
}

func joinKey(parts []string) string { return strings.Join(parts, ".") }

// stripComment removes a trailing comment outside of strings.
func stripComment(s string) string {
	quote := rune(0)
	for i, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
		case r == '"' || r == '\'':
			quote = r
		case r == '#':
			return s[:i]
		}
	}
	return s
}

func bracketDelta(s string) int {
	d := 0
	quote := rune(0)
	for _, r := range stripComment(s) {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
		case r == '"' || r == '\'':
			quote = r
		case r == '[':
			d++
		case r == ']':
			d--
		}
	}
	return d
}
