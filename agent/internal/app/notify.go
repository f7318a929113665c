package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifier speaks sd_notify; outside systemd (no NOTIFY_SOCKET) it is silent.
type notifier struct{ log *slog.Logger }

func (n notifier) send(state string) {
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
