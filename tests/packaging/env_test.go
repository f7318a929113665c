package packaging

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Versions of the packages the tests build: the first is installed, the second is the upgrade.
const (
	firstVersion  = "1.0.0"
	secondVersion = "1.0.1"
	release       = "1"
)

// shared holds what the tests build once per run, and the directory it lives in (removed by TestMain).
var shared struct {
	dir string

	artifactsOnce sync.Once
	artifacts     *artifacts
	artifactsErr  error

	rootOnce sync.Once
	root     string
	rootErr  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ambient-packaging-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "packaging tests:", err)
		os.Exit(1)
	}
	shared.dir = dir
	code := m.Run()
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintln(os.Stderr, "packaging tests: cleanup:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// require stops a test whose tools are missing: under CI it fails (a skipped test looks like a pass),
// elsewhere it skips.
func require(t *testing.T, needRoot bool, tools ...string) {
	t.Helper()
	var missing []string
	if needRoot && os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, "the "+tool+" command")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "needs " + strings.Join(missing, ", ") +
		" (apt-get install -y debootstrap systemd-container dpkg-dev lintian rpm rpmlint)"
	if os.Getenv("CI") != "" {
		t.Fatalf("packaging test cannot run: %s; CI is set, so this fails instead of skipping", msg)
	}
	t.Skipf("packaging test skipped: %s; under CI this fails", msg)
}

// repoRoot is the repository's top directory (the tests run in tests/packaging).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "packaging", "build.sh")); err != nil {
		t.Fatalf("repository root not found from the test directory: %v", err)
	}
	return root
}

// artifacts are the built packages: every format for both architectures at firstVersion, and the .deb
// of this machine's architecture at secondVersion.
type artifacts struct {
	first    map[string]string // "deb/amd64" -> path, "rpm/amd64", "tarball/amd64": this machine's architecture
	upgrade  string            // the secondVersion .deb for runtime.GOARCH
	tools    string            // a directory with loadgen (tests/bench/cmd/loadgen), static, for inside the machines
	buildLog string
}

func (a *artifacts) path(t *testing.T, format, arch string) string {
	t.Helper()
	p, ok := a.first[format+"/"+arch]
	if !ok {
		t.Fatalf("no %s for %s was built", format, arch)
	}
	return p
}

// built builds the artifacts once per test run with packaging/build.sh (what `make deb rpm tarball` runs).
func built(t *testing.T) *artifacts {
	t.Helper()
	shared.artifactsOnce.Do(func() {
		shared.artifacts, shared.artifactsErr = build(repoRoot(t))
	})
	if shared.artifactsErr != nil {
		t.Fatalf("building the packages: %v", shared.artifactsErr)
	}
	return shared.artifacts
}

func build(root string) (*artifacts, error) {
	out := filepath.Join(shared.dir, "dist")
	a := &artifacts{first: map[string]string{}}
	start := time.Now()
	var log bytes.Buffer
	script := filepath.Join(root, "packaging", "build.sh")
	runBuild := func(args ...string) ([]string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, script, args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "PKG_RELEASE="+release)
		var stdout bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &log
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("%s %s: %w\n%s", script, strings.Join(args, " "), err, log.String())
		}
		return strings.Fields(stdout.String()), nil
	}
	// One architecture proves the packaging (the other is the same build with another GOARCH): this machine's.
	paths, err := runBuild("-v", firstVersion, "-a", runtime.GOARCH, "-o", out, "deb", "rpm", "tarball")
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		base := filepath.Base(p)
		for _, arch := range []string{runtime.GOARCH} {
			switch base {
			case fmt.Sprintf("ambient-agent_%s-%s_%s.deb", firstVersion, release, arch):
				a.first["deb/"+arch] = p
			case fmt.Sprintf("ambient-agent_%s-%s_%s.rpm", firstVersion, release, arch):
				a.first["rpm/"+arch] = p
			case fmt.Sprintf("ambient-agent_%s_linux_%s.tar.gz", firstVersion, arch):
				a.first["tarball/"+arch] = p
			}
		}
	}
	if len(a.first) != 3 {
		return nil, fmt.Errorf("build.sh printed %v, want a deb, an rpm and a tarball for %s", paths, runtime.GOARCH)
	}
	paths, err = runBuild("-v", secondVersion, "-a", runtime.GOARCH, "-o", filepath.Join(shared.dir, "dist-upgrade"), "deb")
	if err != nil {
		return nil, err
	}
	if len(paths) != 1 {
		return nil, fmt.Errorf("build.sh printed %v, want one .deb", paths)
	}
	a.upgrade = paths[0]
	a.tools = filepath.Join(shared.dir, "tools")
	gobuild := exec.Command("go", "build", "-o", filepath.Join(a.tools, "loadgen"), "./tests/bench/cmd/loadgen")
	gobuild.Dir, gobuild.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building loadgen: %w\n%s", err, out)
	}
	a.buildLog = fmt.Sprintf("built in %s:\n%s", time.Since(start).Round(time.Second), log.String())
	return a, nil
}

// bootableRoot is a Debian root with systemd, unpacked once per run from the cached tarball. The machines
// boot it with --volatile=overlay, so it stays pristine and several machines can share it.
func bootableRoot(t *testing.T) string {
	t.Helper()
	shared.rootOnce.Do(func() {
		shared.root, shared.rootErr = unpackRoot(repoRoot(t))
	})
	if shared.rootErr != nil {
		t.Fatalf("preparing the bootable root: %v", shared.rootErr)
	}
	return shared.root
}

func unpackRoot(repo string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "tests", "tools", "build-nspawn-root.sh"))
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("tests/tools/build-nspawn-root.sh: %w\n%s", err, stderr.String())
	}
	tarball := strings.TrimSpace(string(out))
	root := filepath.Join(shared.dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return "", err
	}
	untar := exec.CommandContext(ctx, "tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", tarball, "-C", root)
	if out, err := untar.CombinedOutput(); err != nil {
		return "", fmt.Errorf("unpack %s: %w\n%s", tarball, err, out)
	}
	return root, nil
}

// runErr runs a host command and returns its output and error.
func runErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// run runs a host command and fails the test with its output if it fails.
func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
