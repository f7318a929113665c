package policy

import (
	"sync"
	"sync/atomic"
)

// Store holds the enforced policy set: the policy directory's merged with the
// authorizations istiod sent last. Readers call Load and never lock; each
// change of either source builds the merged set anew, one at a time.
type Store struct {
	enforced atomic.Pointer[Set] // nil: no policy

	mu    sync.Mutex
	local *Set
	xds   []XDSAuthorization
	fromX bool // istiod has sent its authorizations at least once
}

// NewStore enforces local (nil: no policy) until istiod sends authorizations.
func NewStore(local *Set) *Store {
	s := &Store{local: local}
	s.enforced.Store(local)
	return s
}

// Load returns the enforced set (nil: no policy).
func (s *Store) Load() *Set { return s.enforced.Load() }

// Local returns the policy directory's set.
func (s *Store) Local() *Set {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.local
}

// SetLocal replaces the policy directory's set and returns the new enforced
// set, with the warnings of merging istiod's authorizations into it.
func (s *Store) SetLocal(local *Set) (*Set, []Warning) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.local = local
	return s.mergeLocked()
}

// SetXDS replaces istiod's authorizations and returns the new enforced set,
// with the warnings of merging them.
func (s *Store) SetXDS(auths []XDSAuthorization) (*Set, []Warning) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.xds, s.fromX = auths, true
	return s.mergeLocked()
}

func (s *Store) mergeLocked() (*Set, []Warning) {
	set, warnings := s.local, []Warning(nil)
	if s.fromX {
		set, warnings = set.WithXDS(s.xds)
	}
	s.enforced.Store(set)
	return set, warnings
}
