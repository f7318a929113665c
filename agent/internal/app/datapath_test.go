package app

import (
	"testing"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// Same-host capture follows the configured classes, not only those resolved at the time: a unit that is not
// running when the spec is built still has its calls to another local workload meshed once it starts (its class
// is added to the spec without rebuilding the rest). One workload alone has no call to mesh.
func TestSameHostFollowsConfiguredClasses(t *testing.T) {
	two := testConfig(t, `
[[workload]]
name = "alice"
addresses = ["10.0.0.5"]
ports = [8081]
[[workload]]
name = "bob"
addresses = ["10.0.0.5"]
ports = [8082]
unit = "bob.service"
`)
	snap := state.NewSnapshot(1, state.FromConfig(two))
	if s := captureSpec(two, snap, nil); !s.SameHost {
		t.Error("bob's unit is not running yet (no class resolved): SameHost is off, and stays off when it starts")
	}
	one := testConfig(t, `
[[workload]]
name = "bob"
addresses = ["10.0.0.5"]
unit = "bob.service"
`)
	if s := captureSpec(one, state.NewSnapshot(1, state.FromConfig(one)), nil); s.SameHost {
		t.Error("one workload: SameHost is on")
	}
}
