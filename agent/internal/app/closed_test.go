package app

import (
	"testing"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// Only a stop job of the agent's own unit opens the host; every other case keeps it closed.
func TestStopJobOpensOnlyOnStop(t *testing.T) {
	const unit = "ambient-agent.service"
	for _, tc := range []struct {
		name   string
		jobs   []sddbus.JobStatus
		remove bool
	}{
		{"systemctl stop", []sddbus.JobStatus{{Unit: "other.service", JobType: "start"}, {Unit: unit, JobType: "stop"}}, true},
		{"systemctl restart", []sddbus.JobStatus{{Unit: unit, JobType: "restart"}}, false},
		{"upgrade try-restart", []sddbus.JobStatus{{Unit: unit, JobType: "try-restart"}}, false},
		{"exited by itself", nil, false},
		{"another unit stops", []sddbus.JobStatus{{Unit: "ambient-agent-close.service", JobType: "stop"}}, false},
		{"shutdown", []sddbus.JobStatus{{Unit: unit, JobType: "stop"}, {Unit: "shutdown.target", JobType: "start"}}, false},
		{"reboot", []sddbus.JobStatus{{Unit: "reboot.target", JobType: "start"}, {Unit: unit, JobType: "stop"}}, false},
	} {
		if remove, reason := stopJob(tc.jobs, unit); remove != tc.remove {
			t.Errorf("%s: remove = %v (%s), want %v", tc.name, remove, reason, tc.remove)
		}
	}
}

// A stop asked for opens the host even when the agent then failed to stop cleanly
// (killed at TimeoutStopSec); a failure with no stop asked for never does.
func TestStopJobDecidesWhateverTheResult(t *testing.T) {
	const unit = "ambient-agent.service"
	for _, result := range []string{"signal", "exit-code", "watchdog", "core-dump", "timeout"} {
		t.Setenv("SERVICE_RESULT", result)
		if remove, reason := stopJob(nil, unit); remove {
			t.Errorf("SERVICE_RESULT=%s, no job: the table would be removed (%s)", result, reason)
		}
		if remove, reason := stopJob([]sddbus.JobStatus{{Unit: unit, JobType: "stop"}}, unit); !remove {
			t.Errorf("SERVICE_RESULT=%s, a stop job: the table would stay (%s)", result, reason)
		}
	}
}

// Without systemd to ask (this test process), the table stays.
func TestAfterStopKeepsTheHostClosedWithoutSystemd(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
	if remove, reason := AfterStop(t.Context(), "ambient-agent.service"); remove {
		t.Errorf("the table would be removed (%s)", reason)
	}
}
