package app

import (
	"context"
	"errors"
	"maps"
	"os"
	"slices"

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
// Of a good file, only the changes that apply live are put in place (see
// effective); the others wait for a restart, and nothing runs half of them.
func (a *App) reload() {
	next, err := config.Load(a.path)
	if err != nil {
		a.rejectReload(err)
		return
	}
	prev := a.cfg.Load()
	changed := config.Diff(prev, next)
	live, restart := splitLive(prev, next, changed)
	eff := effective(prev, next, live)
	if err := a.applyReload(prev, eff, live); err != nil {
		a.rejectReload(err)
		return
	}
	if len(restart) > 0 {
		a.log.Warn("reloaded; some changes take effect only after a restart", "keys", restart)
	}
	a.reloadGossipKeys()
	a.log.Info("configuration reloaded", "changed", changed)
	// Compiled again now, so that a change the file watcher installed
	// meanwhile is not replaced by an older set.
	_ = a.reloadPolicies("reload")
	a.notify.status(a.statusLine())
}

// reloadGossipKeys installs the gossip key file's keys as they are now (a key rotation); a file that does not read
// keeps the running keys.
func (a *App) reloadGossipKeys() {
	if a.gossip == nil {
		return
	}
	n, err := a.gossip.ReloadKeys()
	if err != nil {
		a.log.Error("gossip keys not reloaded, keeping the running keys", "err", err)
		return
	}
	if n > 0 {
		a.log.Info("gossip keys reloaded", "keys", n)
	}
}

// rejectReload logs why a reload changed nothing: each problem of a bad file,
// or the error.
func (a *App) rejectReload(err error) {
	var ps config.Problems
	if errors.As(err, &ps) {
		for _, p := range ps {
			a.log.Error("reload rejected, keeping the running configuration", "problem", p.String())
		}
	} else {
		a.log.Error("reload rejected, keeping the running configuration", "err", err)
	}
	a.notify.status("reload rejected: " + firstLine(err.Error()))
}

// applyReload puts eff in place: what can fail first (a [policy] that does not
// compile, the capture rules, the health checks), so that a failure leaves
// everything as it was; then the configuration and what derives from it.
func (a *App) applyReload(prev, eff *config.Config, live map[string]bool) error {
	// A new [policy] whose directory does not compile rejects the whole reload,
	// before anything changes. (With [policy] unchanged, a bad directory keeps
	// the running set, as the file watcher does.)
	if live["policy"] {
		if _, _, err := LoadPolicies(eff.Policy); err != nil {
			return err
		}
	}
	// The capture rules swap atomically: on error the old ones stay.
	if live["capture"] || live["workload"] {
		if err := a.dp.table.reinstall(eff); err != nil {
			return err
		}
	}
	if live["workload"] {
		if err := a.health.Set(healthChecks(eff)); err != nil {
			_ = a.dp.table.reinstall(prev)
			return err
		}
	}
	a.level.Set(eff.Log.Level)
	a.cfg.Store(eff)
	a.dp.deps.Apply(dataPathSettings(eff))
	if live["workload"] || live["remote_workload"] || live["service"] {
		a.publishState()
		a.republishGossip(eff)
	}
	return nil
}

// effective is the configuration a reload puts in place: the running one, with
// the sections that apply live taken from next. A change that needs a restart
// stays out of it until then: the certificates, listeners and per-workload
// outbound ports were made for the running configuration, and a half-applied
// change (say, new capture rules sending a workload's processes to another
// workload's port) would present the wrong identity.
func effective(prev, next *config.Config, live map[string]bool) *config.Config {
	eff := *prev
	for key, apply := range liveSections {
		if live[key] {
			apply(&eff, next)
		}
	}
	return &eff
}

// liveSections take, for each key a reload may apply live, its section from next.
var liveSections = map[string]func(eff, next *config.Config){
	"log.level":       func(eff, next *config.Config) { eff.Log.Level = next.Log.Level },
	"policy":          func(eff, next *config.Config) { eff.Policy = next.Policy },
	"remote_workload": func(eff, next *config.Config) { eff.Remotes = next.Remotes },
	"service":         func(eff, next *config.Config) { eff.Services = next.Services },
	"capture":         func(eff, next *config.Config) { eff.Capture = next.Capture },
	"workload":        func(eff, next *config.Config) { eff.Workloads = next.Workloads },
}

// splitLive sorts changed keys into those a reload applies now and those that
// need a restart. Workloads apply live while their identities stay the same
// (new identities need new certificates from the identity source). When the
// file has any change that needs a restart, only log.level and [policy], which
// no other section refers to, apply now; the rest waits with it, so that the
// running configuration is always one that was validated as a whole.
func splitLive(prev, next *config.Config, changed []string) (map[string]bool, []string) {
	live := map[string]bool{}
	var restart []string
	for _, k := range changed {
		if why := needsRestart(prev, next, k); why != "" {
			restart = append(restart, why)
		} else {
			live[k] = true
		}
	}
	if len(restart) > 0 {
		for _, k := range []string{"capture", "workload", "remote_workload", "service"} {
			if live[k] {
				delete(live, k)
				restart = append(restart, k+" (waits with them)")
			}
		}
	}
	return live, restart
}

// needsRestart says why the change of key k needs a restart ("" when it applies
// live).
func needsRestart(prev, next *config.Config, k string) string {
	switch k {
	case "log.level", "remote_workload", "service":
		return ""
	case "policy":
		// The hairpin identity is a certificate the identity source holds.
		if !sameIdentities(prev, next) {
			return "policy (hairpin identity changed)"
		}
		return ""
	case "capture":
		switch {
		case prev.Capture.Enabled != next.Capture.Enabled:
			return k + ".enabled"
		case prev.Capture.Mark != next.Capture.Mark:
			return k + ".mark" // every socket of the agent carries the mark it started with
		case prev.Capture.OriginalSource != next.Capture.OriginalSource:
			return k + ".original_source" // the proxies' dialers and the return path are set up at start
		}
		return ""
	case "workload":
		switch {
		case !sameIdentities(prev, next):
			return "workload (identities changed)"
		case !sameRecognition(prev, next):
			return "workload (user, group or unit changed)"
		case !sameRegistrations(prev, next):
			return "workload (auto_register, or a registered workload, changed)"
		}
		return ""
	}
	return k
}

func sameIdentities(a, b *config.Config) bool {
	ia, errA := localIdentities(a)
	ib, errB := localIdentities(b)
	return errA == nil && errB == nil && maps.Equal(dedupe(ia), dedupe(ib))
}

// sameRegistrations reports whether the workloads istiod registers (auto_register), as the registration streams
// present them, are unchanged: the streams are opened at start.
func sameRegistrations(a, b *config.Config) bool {
	registered := func(c *config.Config) []config.Workload {
		var out []config.Workload
		for _, w := range c.Workloads {
			if w.AutoRegister != "" {
				out = append(out, w)
			}
		}
		return out
	}
	return slices.EqualFunc(registered(a), registered(b), func(x, y config.Workload) bool {
		return x.AutoRegister == y.AutoRegister && x.Name == y.Name && x.Namespace == y.Namespace &&
			x.ServiceAccount == y.ServiceAccount && slices.Equal(x.Addresses, y.Addresses) && maps.Equal(x.Labels, y.Labels)
	})
}

// sameRecognition reports whether the workloads recognised by their
// processes, and their outbound ports, are unchanged.
func sameRecognition(a, b *config.Config) bool {
	return slices.EqualFunc(workloadClasses(a), workloadClasses(b), func(x, y workloadClass) bool {
		return x.uid == y.uid && x.port == y.port && x.match.String() == y.match.String()
	})
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}
