package app

import (
	"slices"
	"sync"
)

// readiness tracks the conditions the agent needs before it is ready. Each
// component that must be in place registers a condition at build time and marks
// it done when it is; /healthz/ready is 200 only when all are done.
type readiness struct {
	mu      sync.Mutex
	pending map[string]bool // condition -> done
}

func newReadiness() *readiness { return &readiness{pending: map[string]bool{}} }

// require registers a condition that is not yet met.
func (r *readiness) require(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending[name] = false
}

// requireIf requires the condition when cond holds (a component that is there).
func (r *readiness) requireIf(cond bool, name string) {
	if cond {
		r.require(name)
	}
}

// set marks a condition met or not met again.
func (r *readiness) set(name string, done bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending[name] = done
}

// state reports whether every condition holds, and which do not.
func (r *readiness) state() (bool, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var missing []string
	for name, done := range r.pending {
		if !done {
			missing = append(missing, name)
		}
	}
	slices.Sort(missing)
	return len(missing) == 0, missing
}
