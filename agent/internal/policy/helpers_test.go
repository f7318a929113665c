package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// compileYAML parses and compiles one file's worth of YAML, failing the test on any problem.
func compileYAML(t testing.TB, yaml string, opts ...Options) (*Set, []Warning) {
	t.Helper()
	rs, ps := Parse("test.yaml", []byte(yaml))
	if len(ps) > 0 {
		t.Fatalf("unexpected problems:\n%s", Problems(ps))
	}
	o := Options{}
	if len(opts) > 0 {
		o = opts[0]
	}
	return Compile(rs, o)
}

func id(s string) spiffeid.ID {
	if s == "" {
		return spiffeid.ID{}
	}
	return spiffeid.RequireFromString(s)
}

func addr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

// conn builds a connection to workload app=web in namespace "default" at 10.0.0.2:8080.
func conn(source, sourceIP string) Conn {
	return Conn{
		DestNamespace:  "default",
		DestLabels:     map[string]string{"app": "web"},
		DestIP:         addr("10.0.0.2"),
		DestPort:       8080,
		SourceIdentity: id(source),
		SourceIP:       addr(sourceIP),
	}
}

func warningsString(ws []Warning) string {
	var b strings.Builder
	for _, w := range ws {
		b.WriteString(w.String())
		b.WriteByte('\n')
	}
	return b.String()
}
