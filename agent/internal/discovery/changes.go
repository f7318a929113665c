package discovery

import (
	"reflect"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// The change log: which node each generation of the table changed, and whether only its workloads' attributes
// could have (its services, waypoint and gateway as before), so that a consumer can patch its state with those
// nodes' workloads (state.Snapshot.Patch) instead of building it from everything (Changes).

// maxChanges bounds the log: a consumer further behind builds.
const maxChanges = 1024

// change is one generation of the table.
type change struct {
	gen  uint64
	node string // "": not a record's change (addresses held unreachable)
	// workloads: the node's new record differs from the one before at most in its workloads.
	workloads bool
}

// logChange records generation t.gen.
func (t *table) logChange(node string, workloads bool) {
	if len(t.changes) == maxChanges {
		t.changes = append(t.changes[:0], t.changes[maxChanges/2:]...)
	}
	t.changes = append(t.changes, change{gen: t.gen, node: node, workloads: workloads})
}

// changesSince returns the nodes whose records changed after generation since, when each change was of a record
// replaced by one that differs at most in its workloads; ok is false otherwise, or when the log does not reach
// back to since.
func (t *table) changesSince(since uint64) (nodes []string, ok bool) {
	if since == t.gen {
		return nil, true
	}
	if since == 0 || since > t.gen || len(t.changes) == 0 || t.changes[0].gen > since+1 {
		return nil, false
	}
	seen := map[string]bool{}
	for _, c := range t.changes {
		if c.gen <= since {
			continue
		}
		if !c.workloads {
			return nil, false
		}
		if !seen[c.node] {
			seen[c.node] = true
			nodes = append(nodes, c.node)
		}
	}
	return nodes, true
}

// workloadsOnly reports whether b, a node's new record, differs from a, the one it replaces, at most in its
// workloads: the same services (as this node derives them), waypoint, and no gateway.
func workloadsOnly(a, b *held) bool {
	if a == nil || b == nil || a.rec.Gateway != nil || b.rec.Gateway != nil {
		return false
	}
	return reflect.DeepEqual(remoteServices(a.rec, a.proof), remoteServices(b.rec, b.proof)) &&
		reflect.DeepEqual(remoteWaypoint(a.rec, a.proof), remoteWaypoint(b.rec, b.proof))
}

// Changes returns the workloads, now, of the nodes whose records changed after generation since (Generation),
// when every change was of a record replaced by one that differs at most in its workloads (ok), and the current
// generation. The workloads are shared: do not modify them.
func (d *Discovery) Changes(since uint64) (gen uint64, nodes map[string][]*state.Workload, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	names, ok := d.table.changesSince(since)
	if !ok {
		return d.table.gen, nil, false
	}
	nodes = make(map[string][]*state.Workload, len(names))
	for _, n := range names {
		p := d.table.peers[n]
		if p == nil || p.current == nil {
			return d.table.gen, nil, false
		}
		nodes[n] = p.current.workloads
	}
	return d.table.gen, nodes, true
}
