package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ambient-agent/ambient-agent/ports"
	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// portRef matches an agent port written into a string: "127.0.0.1:15000", ":15053".
var portRef = regexp.MustCompile(`:(1500[0-9]|150[2-5][0-9]|151[0-9][0-9])\b`)

// The agent's ports are defined once, in package ports: a literal of one of
// them anywhere else in non-test code (a number, or a string with ":port")
// is a second definition that will drift. Comments may name them.
func TestPortLiteralsOnlyInPorts(t *testing.T) {
	root := lab.RepoRoot()
	var bad []string
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel == "ports" || rel == "tests" || strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok {
				return true
			}
			switch lit.Kind {
			case token.INT:
				if v, err := strconv.ParseUint(lit.Value, 0, 16); err == nil && ports.Agent(uint16(v)) {
					bad = append(bad, fset.Position(lit.Pos()).String()+": "+lit.Value)
				}
			case token.STRING:
				if s, err := strconv.Unquote(lit.Value); err == nil {
					for _, m := range portRef.FindAllStringSubmatch(s, -1) {
						if v, _ := strconv.ParseUint(m[1], 10, 16); ports.Agent(uint16(v)) {
							bad = append(bad, fset.Position(lit.Pos()).String()+": "+lit.Value)
						}
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bad {
		t.Errorf("an agent port outside package ports (use its constant): %s", b)
	}
}
