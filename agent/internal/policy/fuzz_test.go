package policy

import (
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse, and whatever parses to Compile, Evaluate and EvaluateWaypoint:
// none may panic, a file with problems yields no resources, and every problem says where it is. The seed
// corpus is in testdata/fuzz/FuzzParse. Run it with: go test -fuzz FuzzParse ./agent/internal/policy
func FuzzParse(f *testing.F) {
	f.Add([]byte(allowFrom("a", "default", "namespaces: [x]") + "---\n" + pa("m", "istio-system", "", "STRICT", "")))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, ps := Parse("fuzz.yaml", data)
		if len(ps) > 0 && rs != nil {
			t.Fatalf("%d problems and %d resources", len(ps), len(rs))
		}
		lines := strings.Count(string(data), "\n") + 1
		for _, p := range ps {
			if p.File != "fuzz.yaml" || p.Line < 0 || p.Line > lines || p.Msg == "" {
				t.Fatalf("problem without a place or a message: %+v (file has %d lines)", p, lines)
			}
			_ = p.String()
		}
		set, ws := Compile(rs, Options{})
		for _, w := range ws {
			_ = w.String()
		}
		for _, c := range []Conn{conn("", "10.0.0.1"), conn(sleep, "10.0.0.1"),
			{DestNamespace: "istio-system", DestLabels: map[string]string{"app": "x"}}} {
			d := set.Evaluate(c)
			_ = d.String()
			for _, t := range []WaypointTarget{{}, {"ns", "wp", "ns", "s"}, {"istio-system", "waypoint", "default", "x"}} {
				_ = set.EvaluateWaypoint(c, t).String()
			}
		}
		_ = set.Summary()
		_ = set.Authorizations()
	})
}
