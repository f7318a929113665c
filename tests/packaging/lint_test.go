package packaging

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestPackagesLint lints the .deb and .rpm of this machine's architecture (lintian and rpmlint: no errors) and
// checks that each marks the configuration as a file upgrades never overwrite.
func TestPackagesLint(t *testing.T) {
	require(t, false, "lintian", "rpmlint", "rpm", "rpm2cpio", "cpio", "dpkg-deb")
	t.Parallel()
	a := built(t)
	t.Log(a.buildLog)
	root := repoRoot(t)

	var pkgs []string
	for _, arch := range []string{runtime.GOARCH} {
		pkgs = append(pkgs, a.path(t, "deb", arch), a.path(t, "rpm", arch))
	}
	// rpmlint unpacks with cpio, and nfpm's payload paths are absolute: lint.sh must keep it out of /.
	const canary = "/usr/share/licenses/ambient-agent"
	_, statErr := os.Stat(canary)
	hadCanary := statErr == nil
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "packaging", "lint.sh"), pkgs...)
	out, err := cmd.CombinedOutput()
	t.Logf("packaging/lint.sh:\n%s", out)
	if _, statErr := os.Stat(canary); statErr == nil && !hadCanary {
		t.Errorf("linting unpacked the rpm into this machine's / (%s appeared)", canary)
	}
	if err != nil {
		t.Fatalf("lint reported errors: %v", err)
	}

	for _, arch := range []string{runtime.GOARCH} {
		if got := run(t, root, "dpkg-deb", "--info", a.path(t, "deb", arch), "conffiles"); strings.TrimSpace(got) != "/etc/ambient-agent/config.toml" {
			t.Errorf("%s .deb conffiles: %q, want /etc/ambient-agent/config.toml", arch, got)
		}
		// %{FILEFLAGS:fflags}: c = %config, n = noreplace.
		flags := run(t, root, "rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", a.path(t, "rpm", arch))
		if !regexp.MustCompile(`(?m)^/etc/ambient-agent/config.toml cn$`).MatchString(flags) {
			t.Errorf("%s .rpm: /etc/ambient-agent/config.toml is not %%config(noreplace):\n%s", arch, flags)
		}
		wantArch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[arch]
		if got := run(t, root, "rpm", "-qp", "--qf", "%{ARCH}", a.path(t, "rpm", arch)); got != wantArch {
			t.Errorf("%s .rpm has architecture %q, want %s", arch, got, wantArch)
		}
		if got := run(t, root, "dpkg-deb", "--field", a.path(t, "deb", arch), "Architecture"); strings.TrimSpace(got) != arch {
			t.Errorf("%s .deb has architecture %q", arch, strings.TrimSpace(got))
		}
	}
}

// TestCopyrightListsLinkedModules checks that packaging/copyright names every Go module linked into the
// binary: the packages ship that file as the binary's license notice.
func TestCopyrightListsLinkedModules(t *testing.T) {
	root := repoRoot(t)
	out := run(t, root, "go", "list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", "./agent/cmd/ambient-agent")
	main := strings.TrimSpace(run(t, root, "go", "list", "-m"))
	linked := map[string]bool{}
	for _, m := range strings.Fields(out) {
		if m != main {
			linked[m] = true
		}
	}

	f, err := os.Open(filepath.Join(root, "packaging", "copyright"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// "Files:" paragraphs list module paths as "<module path>/*", continued on indented lines.
	var patterns []string
	inFiles := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Files:"):
			inFiles = true
			patterns = append(patterns, strings.Fields(strings.TrimPrefix(line, "Files:"))...)
		case inFiles && strings.HasPrefix(line, " "):
			patterns = append(patterns, strings.Fields(line)...)
		default:
			inFiles = false
		}
	}
	var missing []string
	for m := range linked {
		found := false
		for _, p := range patterns {
			dir := strings.TrimSuffix(p, "/*")
			if dir != p && (m == dir || strings.HasPrefix(m, dir+"/")) {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("packaging/copyright does not list these modules linked into ambient-agent: %v\n"+
			"add a Files: paragraph for each (module path, copyright holder from its LICENSE, license)", missing)
	}
}
