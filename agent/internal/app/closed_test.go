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
	} {
		if remove, reason := stopJob(tc.jobs, unit); remove != tc.remove {
			t.Errorf("%s: remove = %v (%s), want %v", tc.name, remove, reason, tc.remove)
		}
	}
}

// A crash, a kill or a watchdog timeout keeps the table whatever systemd's jobs say.
func TestAfterStopKeepsTheHostClosedAfterAFailure(t *testing.T) {
	for _, result := range []string{"signal", "exit-code", "watchdog", "core-dump", "timeout"} {
		t.Setenv("SERVICE_RESULT", result)
		if remove, reason := AfterStop(t.Context(), "ambient-agent.service"); remove {
			t.Errorf("SERVICE_RESULT=%s: the table would be removed (%s)", result, reason)
		}
	}
}
