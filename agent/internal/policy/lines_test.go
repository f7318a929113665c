package policy

import "testing"

func TestLineLocator(t *testing.T) {
	doc := `# comment
apiVersion: v1
metadata:
  name: x
  annotations:
    "quoted/key": "v"
spec:
  rules:
  - from:
    - source:
        principals:
        - a
        - b
    # between
    - source: {namespaces: [x, y]}
    to:
    - operation:
        ports: ["80"]
  - when:
    -   key: k
        values: [v]
  - to:
      - operation:
          ports:
          - "1"
    from:
    - source:
        ipBlocks: [1.1.1.1]
list:
- - nested
  - second
description: |
  spec:
    rules: fake
end: 1
`
	p := func(segs ...any) fieldPath {
		var out fieldPath
		for _, s := range segs {
			switch v := s.(type) {
			case string:
				out = out.key(v)
			case int:
				out = out.index(v)
			}
		}
		return out
	}
	cases := []struct {
		path fieldPath
		want int
	}{
		{p("apiVersion"), 11},
		{p("metadata", "name"), 13},
		{p("metadata", "annotations", "quoted/key"), 15},
		{p("spec", "rules", 0), 18},
		{p("spec", "rules", 0, "from", 0, "source", "principals", 1), 22},
		{p("spec", "rules", 0, "from", 1), 24},
		{p("spec", "rules", 0, "from", 1, "source", "namespaces", 1), 24}, // flow style: the enclosing key
		{p("spec", "rules", 0, "to", 0, "operation", "ports", 0), 27},
		{p("spec", "rules", 1, "when", 0, "values"), 30},
		{p("spec", "rules", 2, "to", 0, "operation", "ports", 0), 34},
		{p("spec", "rules", 2, "from", 0, "source", "ipBlocks"), 37},
		{p("list", 0, 1), 40},
		{p("end"), 44},
		{p("missing", "deeper"), 11},        // nothing found: the document's first line
		{p("spec", "rules", 9, "from"), 17}, // the deepest ancestor found
		{p("description", "spec"), 41},      // a block scalar has no keys
	}
	loc := newLineLocator(doc, 10)
	for _, tc := range cases {
		if got := loc.line(tc.path); got != tc.want {
			t.Errorf("%s: line %d, want %d", tc.path, got, tc.want)
		}
	}
}

func TestFieldPathString(t *testing.T) {
	p := fieldPath{}.key("spec").key("selector").key("matchLabels").key("app.kubernetes.io/name")
	if got := p.String(); got != `spec.selector.matchLabels["app.kubernetes.io/name"]` {
		t.Errorf("got %s", got)
	}
	p = fieldPath{}.key("spec").key("rules").index(2).key("from")
	if got := p.String(); got != "spec.rules[2].from" {
		t.Errorf("got %s", got)
	}
	if got := (fieldPath{}).key("8080").String(); got != `["8080"]` {
		t.Errorf("got %s", got)
	}
}
