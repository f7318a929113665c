// Package e2e holds the black-box scenarios: the real ambient-agent binary in
// lab hosts (network namespaces) with the real kernel.
package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// agentBin is the binary under test, built once per run, in scratch: the run's
// own directory, removed when it ends, where tests build other binaries too.
var agentBin, scratch string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ambient-agent-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scratch = dir
	agentBin, err = lab.BuildAgent(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
