package bench

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// binaries are the programs a run needs, built into a temporary directory.
type binaries struct {
	agent, compare, loadgen, peer string
}

// build compiles the agent (unless given), loadgen and the Istio peer (its own module: the first build of Istio's
// packages takes minutes; later ones come from the Go build cache).
func build(dir, agent, compare string) (binaries, error) {
	b := binaries{agent: agent, compare: compare, loadgen: filepath.Join(dir, "loadgen"), peer: filepath.Join(dir, "hbonepeer")}
	if b.agent == "" {
		var err error
		if b.agent, err = lab.BuildAgent(dir); err != nil {
			return b, err
		}
	}
	root := lab.RepoRoot()
	if err := goBuild(root, b.loadgen, "./tests/bench/cmd/loadgen"); err != nil {
		return b, err
	}
	if err := goBuild(filepath.Join(root, "tests", "bench", "peer"), b.peer, "."); err != nil {
		return b, err
	}
	return b, nil
}

func goBuild(dir, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s (in %s): %w\n%s", pkg, dir, err, b)
	}
	return nil
}

// commit names the working tree the agent was built from.
func commit() string {
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = lab.RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
