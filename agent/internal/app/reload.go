package app

import (
	"context"
	"errors"
	"maps"
	"os"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

// reloadLoop reloads the configuration on every SIGHUP until ctx is done.
func (a *App) reloadLoop(ctx context.Context, hup <-chan os.Signal) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			a.reload()
		}
	}
}

// reload builds and validates the new configuration and swaps it in. A bad file
// changes nothing: the running configuration stays and the problems are logged.
func (a *App) reload() {
	next, err := config.Load(a.path)
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				a.log.Error("reload rejected, keeping the running configuration", "problem", p.String())
			}
		} else {
			a.log.Error("reload rejected, keeping the running configuration", "err", err)
		}
		a.notify.status("reload rejected: " + firstLine(err.Error()))
		return
	}
	prev := a.cfg.Load()
	changed := config.Diff(prev, next)
	live, restart := a.splitLive(prev, next, changed)
	// The capture rules are the one part that can fail: apply them first, so a
	// failure leaves everything as it was (the table swap is atomic).
	if live["capture"] || live["workload"] {
		if err := a.reinstallCapture(next); err != nil {
			a.log.Error("reload rejected, keeping the running configuration", "err", err)
			a.notify.status("reload rejected: " + firstLine(err.Error()))
			return
		}
	}
	if live["workload"] {
		if err := a.health.Set(healthChecks(next)); err != nil {
			a.log.Error("reload rejected, keeping the running configuration", "err", err)
			a.notify.status("reload rejected: " + firstLine(err.Error()))
			if live["capture"] || live["workload"] {
				_ = a.reinstallCapture(prev)
			}
			return
		}
	}
	a.level.Set(next.Log.Level)
	a.cfg.Store(next)
	if live["workload"] || live["remote_workload"] || live["service"] {
		a.publishState()
		a.republishGossip(next)
	}
	if len(restart) > 0 {
		a.log.Warn("reloaded; some changes take effect only after a restart", "keys", restart)
	}
	a.log.Info("configuration reloaded", "changed", changed)
	_ = a.reloadPolicies("reload")
	a.notify.status(a.statusLine())
}

// splitLive sorts changed keys into those a reload applies now and those that
// need a restart. Workloads apply live while their identities stay the same
// (new identities need new certificates from the identity source).
func (a *App) splitLive(prev, next *config.Config, changed []string) (map[string]bool, []string) {
	live := map[string]bool{}
	var restart []string
	for _, k := range changed {
		switch k {
		case "log.level", "policy", "remote_workload", "service":
			live[k] = true
		case "capture":
			if prev.Capture.Enabled == next.Capture.Enabled {
				live[k] = true
			} else {
				restart = append(restart, k+".enabled")
			}
		case "workload":
			switch {
			case !sameIdentities(prev, next):
				restart = append(restart, "workload (identities changed)")
			case !sameRecognition(prev, next):
				restart = append(restart, "workload (user, group or unit changed)")
			default:
				live[k] = true
			}
		default:
			restart = append(restart, k)
		}
	}
	return live, restart
}

func sameIdentities(a, b *config.Config) bool {
	ia, errA := localIdentities(a)
	ib, errB := localIdentities(b)
	return errA == nil && errB == nil && maps.Equal(dedupe(ia), dedupe(ib))
}

// sameRecognition reports whether the workloads recognised by their
// processes, and their outbound ports, are unchanged.
func sameRecognition(a, b *config.Config) bool {
	ca, cb := workloadClasses(a), workloadClasses(b)
	if len(ca) != len(cb) {
		return false
	}
	for i := range ca {
		if ca[i].uid != cb[i].uid || ca[i].port != cb[i].port || ca[i].match.String() != cb[i].match.String() {
			return false
		}
	}
	return true
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}
