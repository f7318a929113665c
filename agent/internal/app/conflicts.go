package app

import (
	"fmt"
	"slices"

	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// reportConflicts logs the claims the new snapshot does not use that the
// previous one did not report (so a standing conflict is logged once, not at
// every gossip change), and counts them all by kind and reason.
func (a *App) reportConflicts(prev, snap *state.Snapshot) {
	seen := map[string]bool{}
	if prev != nil {
		for _, s := range conflictLines(prev) {
			seen[s] = true
		}
	}
	for _, s := range conflictLines(snap) {
		if !seen[s] {
			a.log.Warn("discovery: a claim is not used", "conflict", s)
		}
	}
	a.metrics.Conflicts.Reset()
	for _, c := range snap.Conflicts() {
		a.metrics.Conflicts.WithLabelValues("address", c.Reason).Inc()
	}
	for _, c := range snap.ServiceConflicts() {
		a.metrics.Conflicts.WithLabelValues("service", c.Reason()).Inc()
	}
	for range snap.WaypointConflicts() {
		a.metrics.Conflicts.WithLabelValues("waypoint", "name_bound_to_another_identity").Inc()
	}
}

func conflictLines(s *state.Snapshot) []string {
	return slices.Concat(stringsOf(s.Conflicts()), stringsOf(s.ServiceConflicts()), stringsOf(s.WaypointConflicts()))
}

// stringsOf is each element's String.
func stringsOf[T fmt.Stringer](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.String()
	}
	return out
}

// countRejected adds to the rejected-records counter what discovery dropped
// since the last call.
func (a *App) countRejected(last map[string]uint64) map[string]uint64 {
	now := a.gossip.Stats().Dropped
	for reason, n := range now {
		if d := n - last[reason]; d > 0 && discovery.IsRejection(reason) {
			a.metrics.GossipRejected.WithLabelValues(reason).Add(float64(d))
		}
	}
	return now
}
