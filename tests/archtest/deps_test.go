// Package archtest enforces the dependency direction of shared/DESIGN.md with
// `go list -deps`: leaves import no agent package, each layer imports only the
// layers below it, pure packages stay free of I/O libraries, and only app and
// cmd touch signals and systemd.
package archtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

const module = "github.com/ambient-agent/ambient-agent/"

// rank is the layer of each agent package: a package may depend only on
// packages of a lower rank. A new package must be placed here.
var rank = map[string]int{
	"agent/internal/bufcopy":   0,
	"agent/internal/config":    0,
	"agent/internal/connlimit": 0,
	"agent/internal/handoff":   0,
	"agent/internal/pbwire":    0,
	"agent/internal/telemetry": 0,
	"agent/internal/yamldocs":  0,
	"agent/internal/vmjoin":    0,
	"nft":                      0,
	"ports":                    -1, // constants only: below every layer
	"agent/internal/identity":  1,
	"agent/internal/meshca":    2,
	"agent/internal/policy":    2,
	"agent/internal/routes":    2,
	"agent/internal/state":     3,
	"agent/internal/discovery": 4,
	"agent/internal/hbone":     4,
	"agent/internal/capture":   4,
	"agent/internal/dns":       4,
	"agent/internal/health":    4,
	"agent/internal/xds":       4,
	"agent/internal/proxy":     5,
	"agent/internal/scalegen":  5, // the scale harness's meshes: imported by tests only
	"agent/internal/admin":     6,
	"agent/internal/app":       7,
	"agent/cmd/ambient-agent":  8,
}

// forbidden lists, per package, what it must not depend on, even transitively.
var forbidden = map[string][]string{
	// hbone knows identities, never policy or mesh state.
	"agent/internal/hbone": {module + "agent/internal/state", module + "agent/internal/policy"},
	// policy and state are pure: no sockets, no HTTP, no gossip, no netlink.
	"agent/internal/policy": {"net/http", "github.com/hashicorp/memberlist", "github.com/google/nftables", "os/exec"},
	"agent/internal/state":  {"net/http", "github.com/hashicorp/memberlist", "github.com/google/nftables", "os/exec"},
	"agent/internal/routes": {"github.com/hashicorp/memberlist", "github.com/google/nftables", "os/exec"},
}

// onlyIn lists imports allowed in the named packages only (direct imports).
var onlyIn = map[string][]string{
	"os/signal": {"agent/internal/app", "agent/cmd/ambient-agent"},
	"github.com/coreos/go-systemd/v22/daemon": {"agent/internal/app"},
	"github.com/coreos/go-systemd/v22/dbus":   {"agent/internal/app"},
}

type pkg struct {
	path    string
	imports []string
	deps    []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	args := []string{"list", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}|{{join .Deps \" \"}}", "./agent/...", "./ports/..."}
	if _, err := os.Stat(filepath.Join(lab.RepoRoot(), "nft")); err == nil {
		args = append(args, "./nft/...")
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = lab.RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.SplitN(line, "|", 3)
		if len(parts) != 3 {
			continue
		}
		pkgs = append(pkgs, pkg{
			path:    strings.TrimPrefix(parts[0], module),
			imports: strings.Fields(parts[1]),
			deps:    strings.Fields(parts[2]),
		})
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

func TestDependencyDirection(t *testing.T) {
	for _, v := range violations(listPackages(t)) {
		t.Error(v)
	}
}

// The checker must be able to fail: known violations are caught.
func TestViolationsAreCaught(t *testing.T) {
	bad := []pkg{
		{path: "agent/internal/hbone", deps: []string{module + "agent/internal/state"}},
		{path: "agent/internal/config", deps: []string{module + "agent/internal/app"}},
		{path: "agent/internal/state", deps: []string{"net/http"}},
		{path: "agent/internal/proxy", imports: []string{"os/signal"}},
		{path: "agent/internal/newthing"},
	}
	got := violations(bad)
	if len(got) != 5 {
		t.Fatalf("want 5 violations, got %d: %v", len(got), got)
	}
}

func violations(pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
		r, ok := rank[p.path]
		if !ok {
			out = append(out, p.path+" is not placed in the layers of shared/DESIGN.md (add it to rank in this test)")
			continue
		}
		for _, d := range p.deps {
			dep := strings.TrimPrefix(d, module)
			if dr, ok := rank[dep]; ok && strings.HasPrefix(d, module) && dr >= r {
				out = append(out, fmt.Sprintf("%s (layer %d) depends on %s (layer %d): only lower layers are allowed", p.path, r, dep, dr))
			}
			for _, bad := range forbidden[p.path] {
				if d == bad || strings.HasPrefix(d, bad+"/") {
					out = append(out, fmt.Sprintf("%s must not depend on %s", p.path, d))
				}
			}
		}
		for _, imp := range p.imports {
			if allowed, restricted := onlyIn[imp]; restricted && !contains(allowed, p.path) {
				out = append(out, fmt.Sprintf("%s imports %s, which only %v may import", p.path, imp, allowed))
			}
		}
	}
	return out
}

func contains(list []string, s string) bool {
	sort.Strings(list)
	i := sort.SearchStrings(list, s)
	return i < len(list) && list[i] == s
}
