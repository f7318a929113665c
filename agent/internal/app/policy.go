package app

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/routes"
)

// policyPollInterval is how often the policy directory is checked for changes.
const policyPollInterval = 2 * time.Second

// LoadPolicies compiles the policy directory of cfg. A missing directory
// means no policy; any bad file fails the whole load.
func LoadPolicies(cfg config.Policy) (*policy.Set, []policy.Warning, error) {
	set, warnings, err := policy.Load(cfg.Dir, policy.Options{RootNamespace: cfg.RootNamespace})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, warnings, fmt.Errorf("policy dir %s: %w", cfg.Dir, err)
	}
	return set, warnings, nil
}

// reloadPolicies loads the policy directory and, when it is good, swaps the set
// in and closes the live connections it no longer allows. A bad directory
// changes nothing.
func (a *App) reloadPolicies(why string) error {
	a.policyMu.Lock() // SIGHUP and the file watcher: one load at a time, so an older one never lands last
	defer a.policyMu.Unlock()
	cfg := a.cfg.Load().Policy
	set, err := a.loadPolicies(cfg)
	if err != nil {
		a.log.Error("policies rejected, keeping the running set", "reason", why, "err", err)
		return err
	}
	rs, err := a.loadRoutes(cfg)
	if err != nil {
		a.log.Error("routes rejected, keeping the running policies and routes", "reason", why, "err", err)
		return err
	}
	closed := a.enforce(a.policies.SetLocal(set))
	a.routes.Store(rs)
	a.log.Info("policies loaded", "reason", why, "dir", cfg.Dir, "policies", set.Len(),
		"waypoint_policies", len(set.WaypointPolicies()), "connections_closed", closed)
	return nil
}

// loadPolicies compiles the policy directory of cfg and logs its warnings.
func (a *App) loadPolicies(cfg config.Policy) (*policy.Set, error) {
	set, warnings, err := LoadPolicies(cfg)
	for _, w := range warnings {
		a.log.Warn("policy", "warning", fmt.Sprint(w))
	}
	return set, err
}

// enforce logs the warnings of merging istiod's authorizations into a new
// enforced set, and closes the live connections it no longer allows. Two
// changes at once both re-evaluate with the latest set, never an older one.
func (a *App) enforce(_ *policy.Set, warnings []policy.Warning) int {
	for _, w := range warnings {
		a.log.Warn("policy from istiod", "warning", fmt.Sprint(w))
	}
	return a.live.Reevaluate(a.policies.Load())
}

// watchPolicies reloads the policy directory when its files change.
func (a *App) watchPolicies(ctx context.Context) error {
	last := dirDigest(a.cfg.Load().Policy.Dir)
	return every(ctx, policyPollInterval, func() {
		// A bad set is reported once; the next change of the files tries again.
		if now := dirDigest(a.cfg.Load().Policy.Dir); now != last {
			_ = a.reloadPolicies("files changed")
			last = now
		}
	})
}

// dirDigest sums the names, sizes and modification times of the policy files.
func dirDigest(dir string) [32]byte {
	entries, _ := os.ReadDir(dir)
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			continue
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00", n, fi.Size(), fi.ModTime().UnixNano())
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// loadRoutes compiles the Gateway API routes of the policy directory (a missing directory: none) and logs what
// is not used of them.
func (a *App) loadRoutes(cfg config.Policy) (*routes.Set, error) {
	rs, err := routes.LoadDir(cfg.Dir)
	if err != nil {
		if _, statErr := os.Stat(cfg.Dir); errors.Is(statErr, fs.ErrNotExist) {
			return routes.Compile(nil), nil
		}
		return nil, fmt.Errorf("routes in %s: %w", cfg.Dir, err)
	}
	set := routes.Compile(rs)
	for _, st := range set.Statuses(nil) {
		for _, r := range st.Reasons {
			a.log.Warn("route", "route", st.Kind+" "+st.Namespace+"/"+st.Name, "source", st.Source, "warning", r)
		}
	}
	return set, nil
}
