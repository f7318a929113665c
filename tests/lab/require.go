package lab

import (
	"os"
	"os/exec"
)

// Require stops a test that cannot run the lab: it fails under CI=true (where a
// skipped lab test would look like a pass) and skips elsewhere.
func Require(t T, tools ...string) {
	t.Helper()
	var missing string
	switch {
	case os.Geteuid() != 0:
		missing = "root (network namespaces)"
	default:
		for _, tool := range append([]string{"ip"}, tools...) {
			if _, err := exec.LookPath(tool); err != nil {
				missing = "the " + tool + " command"
				break
			}
		}
	}
	if missing == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("lab test cannot run: it needs %s (CI=true: failing instead of skipping)", missing)
	}
	t.Skipf("lab test skipped: it needs %s (under CI=true this fails)", missing)
}
