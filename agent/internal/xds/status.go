package xds

import (
	"sync"
	"time"
)

// Status is what the client knows of its link to istiod, for /config_dump, the
// metrics and doctor: while istiod is unreachable the agent keeps serving the
// last state it received, and this says since when that state is stale.
type Status struct {
	Address   string `json:"address"`
	Connected bool   `json:"connected"`
	// Since is when the link last went up (Connected) or down (not).
	Since time.Time `json:"since,omitzero"`
	// LastResponse is when istiod last answered (zero: never).
	LastResponse time.Time `json:"lastResponse,omitzero"`
	// LastError is why the last stream ended ("" while none has).
	LastError string `json:"lastError,omitempty"`
	// Addresses and Policies are the resources held, per type.
	Addresses int `json:"addresses"`
	Policies  int `json:"policies"`
	// Rejected counts the resources refused (NACKed) since start.
	Rejected int `json:"rejected"`
}

// linkStatus is the client's Status behind a lock: written by the Run goroutine,
// read by anyone.
type linkStatus struct {
	mu sync.Mutex
	s  Status
}

func (st *linkStatus) update(f func(*Status)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	f(&st.s)
}

func (st *linkStatus) get() Status {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.s
}
