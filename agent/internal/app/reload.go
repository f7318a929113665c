package app

import (
	"context"
	"errors"
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
	restart := applyLive(changed)
	a.level.Set(next.Log.Level)
	a.cfg.Store(next)
	if len(restart) > 0 {
		a.log.Warn("reloaded; some changes take effect only after a restart", "keys", restart)
	}
	a.log.Info("configuration reloaded", "changed", changed)
	_ = a.reloadPolicies("reload")
	a.notify.status(a.statusLine())
}

// liveKeys are the keys a reload applies to the running agent.
var liveKeys = map[string]bool{"log.level": true}

// applyLive returns the changed keys that need a restart to take effect.
func applyLive(changed []string) []string {
	var restart []string
	for _, k := range changed {
		if !liveKeys[k] {
			restart = append(restart, k)
		}
	}
	return restart
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}
