package policy

import "strings"

// lineLocator finds the line of a field path in one YAML document, so problems can point at it.
// sigs.k8s.io/yaml hands us JSON without positions, so we index block-style YAML ourselves. It is best
// effort: inside flow style ({...}, [...]) it answers with the line of the nearest enclosing key, and when
// nothing is found, with the document's first line.
type lineLocator struct {
	lines []yamlLine
	first int // file line number of lines[0]
}

type yamlLine struct {
	blank  bool
	indent int
	cols   []int // columns where a node starts: the indent, and after each "- " sequence marker
	text   string
}

// block is a node's extent: the lines it spans and the column its content starts at.
type block struct {
	from, to int
	col      int
	inline   bool // a scalar or flow value: nothing deeper can be located
}

func newLineLocator(text string, firstLine int) *lineLocator {
	raw := strings.Split(text, "\n")
	l := &lineLocator{lines: make([]yamlLine, len(raw)), first: firstLine}
	for i, t := range raw {
		t = strings.TrimRight(t, " \t\r")
		trimmed := strings.TrimLeft(t, " ")
		yl := yamlLine{text: t, indent: len(t) - len(trimmed)}
		yl.blank = trimmed == "" || trimmed[0] == '#'
		c := yl.indent
		yl.cols = append(yl.cols, c)
		for c < len(t) && t[c] == '-' && (c+1 == len(t) || t[c+1] == ' ') {
			c++
			for c < len(t) && t[c] == ' ' {
				c++
			}
			if c < len(t) {
				yl.cols = append(yl.cols, c)
			}
		}
		l.lines[i] = yl
	}
	return l
}

// firstLine is the line of the document's first content line.
func (l *lineLocator) firstLine() int {
	for i, yl := range l.lines {
		if !yl.blank && yl.text != "---" {
			return l.first + i
		}
	}
	return l.first
}

// line returns the file line of the field at p, or of its deepest ancestor found.
func (l *lineLocator) line(p fieldPath) int {
	found := -1
	b, ok := l.root()
	for _, seg := range p {
		if !ok || b.inline {
			break
		}
		var at int
		if seg.key != "" {
			at, b, ok = l.findKey(b, seg.key)
		} else {
			at, b, ok = l.findIndex(b, seg.index)
		}
		if ok {
			found = at
		}
	}
	if found < 0 {
		return l.firstLine()
	}
	return l.first + found
}

func (l *lineLocator) root() (block, bool) {
	for i, yl := range l.lines {
		if !yl.blank && yl.text != "---" {
			return block{from: i, to: len(l.lines), col: yl.indent}, true
		}
	}
	return block{}, false
}

func (l *lineLocator) findKey(b block, key string) (int, block, bool) {
	for i := b.from; i < b.to; i++ {
		yl := l.lines[i]
		if yl.blank {
			continue
		}
		for _, c := range yl.cols {
			if c != b.col {
				continue
			}
			if rest, ok := cutKey(yl.text[c:], key); ok {
				return i, l.valueBlock(i, c, rest), true
			}
		}
	}
	return 0, block{}, false
}

// cutKey reports whether s starts with `key:` (the key possibly quoted) and returns what follows.
func cutKey(s, key string) (string, bool) {
	for _, k := range []string{key, `"` + key + `"`, `'` + key + `'`} {
		if rest, ok := strings.CutPrefix(s, k+":"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			return rest, true
		}
	}
	return "", false
}

// valueBlock is the value of the key at line i, column c; rest is the text after the colon.
func (l *lineLocator) valueBlock(i, c int, rest string) block {
	rest = strings.TrimSpace(rest)
	if rest != "" && rest[0] != '#' && rest[0] != '&' && rest[0] != '!' {
		return block{from: i, to: i + 1, col: c, inline: true} // a scalar, a flow collection or a block scalar
	}
	next := l.nextContent(i+1, len(l.lines))
	if next < 0 {
		return block{from: i, to: i + 1, inline: true}
	}
	nl := l.lines[next]
	seqAtSameIndent := nl.indent == c && strings.HasPrefix(nl.text[c:], "-")
	if nl.indent <= c && !seqAtSameIndent {
		return block{from: i, to: i + 1, inline: true} // an empty value
	}
	end := next + 1
	for ; end < len(l.lines); end++ {
		yl := l.lines[end]
		if yl.blank {
			continue
		}
		if yl.indent < c || yl.indent == c && !(seqAtSameIndent && strings.HasPrefix(yl.text[c:], "-")) {
			break
		}
	}
	return block{from: next, to: end, col: nl.indent}
}

func (l *lineLocator) findIndex(b block, n int) (int, block, bool) {
	seen := 0
	for i := b.from; i < b.to; i++ {
		yl := l.lines[i]
		if yl.blank || !isDashAt(yl, b.col) {
			continue
		}
		if seen < n {
			seen++
			continue
		}
		end := i + 1
		for ; end < b.to; end++ {
			next := l.lines[end]
			if !next.blank && (next.indent < b.col || isDashAt(next, b.col)) {
				break
			}
		}
		for k, c := range yl.cols {
			if c == b.col && k+1 < len(yl.cols) {
				item := block{from: i, to: end, col: yl.cols[k+1]}
				if !strings.Contains(yl.text[item.col:], ":") || strings.HasPrefix(yl.text[item.col:], "{") {
					item.inline = !strings.HasPrefix(yl.text[item.col:], "-")
				}
				return i, item, true
			}
		}
		next := l.nextContent(i+1, end)
		if next < 0 {
			return i, block{from: i, to: i + 1, inline: true}, true
		}
		return i, block{from: next, to: end, col: l.lines[next].indent}, true
	}
	return 0, block{}, false
}

func isDashAt(yl yamlLine, col int) bool {
	for _, c := range yl.cols {
		if c == col {
			return strings.HasPrefix(yl.text[c:], "-") && (len(yl.text) == c+1 || yl.text[c+1] == ' ')
		}
	}
	return false
}

func (l *lineLocator) nextContent(from, to int) int {
	for i := from; i < to; i++ {
		if !l.lines[i].blank {
			return i
		}
	}
	return -1
}
