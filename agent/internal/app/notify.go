package app

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifyFDEnv names the descriptor a supervisor (supervise.go) gives its
// worker for the notifications it would otherwise send systemd.
const notifyFDEnv = "AMBIENT_AGENT_NOTIFY_FD"

// notifier speaks sd_notify; outside systemd (no NOTIFY_SOCKET) it is silent.
// A worker under the supervisor writes the same messages, each ended by a NUL,
// to its supervisor's pipe instead: the supervisor is the unit's main process
// and speaks for the worker that serves.
type notifier struct {
	log    *slog.Logger
	pipe   *os.File     // nil: systemd's socket
	broken *atomic.Bool // the supervisor is gone (a restart stopped it): said once
}

// newNotifier is the notifier of this process: the supervisor's pipe when one
// was given, else systemd's socket.
func newNotifier(log *slog.Logger) notifier {
	n := notifier{log: log, broken: new(atomic.Bool)}
	if v := os.Getenv(notifyFDEnv); v != "" {
		os.Unsetenv(notifyFDEnv) // not for the processes the agent runs
		if fd, err := strconv.Atoi(v); err == nil && fd > 2 {
			n.pipe = os.NewFile(uintptr(fd), "supervisor")
		}
	}
	return n
}

func (n notifier) send(state string) {
	if n.pipe != nil {
		if _, err := n.pipe.Write([]byte(state + "\x00")); err != nil && !n.broken.Swap(true) {
			n.log.Info("the supervisor is gone (a restart or a stop): this agent goes on until it is replaced or stopped", "err", err)
		}
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

func (n notifier) ready(status string)  { n.send(daemon.SdNotifyReady + "\nSTATUS=" + status) }
func (n notifier) status(status string) { n.send("STATUS=" + status) }
func (n notifier) stopping()            { n.send(daemon.SdNotifyStopping + "\nSTATUS=draining connections") }

// watchdog pings systemd at half the WATCHDOG_USEC interval while healthy()
// holds, until ctx is done. Without a watchdog it returns at once.
func (n notifier) watchdog(ctx context.Context, healthy func() bool) error {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return nil
	}
	return every(ctx, interval/2, func() {
		if healthy() {
			n.send(daemon.SdNotifyWatchdog)
		}
	})
}

// every calls fn every interval until ctx is done.
func every(ctx context.Context, interval time.Duration, fn func()) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			fn()
		}
	}
}
