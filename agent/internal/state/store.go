package state

import (
	"sync"
	"sync/atomic"
)

// Store holds the current snapshot and builds the next ones: it numbers them
// itself. Readers call Load and never lock; Rebuild assembles and publishes a
// whole new snapshot, one at a time; subscribers learn that a newer one exists.
type Store struct {
	cur     atomic.Pointer[Snapshot]
	build   sync.Mutex // one Rebuild at a time
	version uint64     // of the last snapshot built, under build
	mu      sync.Mutex
	subs    []chan struct{}
}

// NewStore starts with the snapshot of in, version 1.
func NewStore(in Input) *Store {
	s := &Store{version: 1}
	s.cur.Store(Build(1, in))
	return s
}

// Rebuild builds the next snapshot from what assemble returns for the current
// one, publishes it, then tells report (nil: nobody) of both, in the order of
// the versions.
func (s *Store) Rebuild(assemble func(current *Snapshot) Input, report func(current, next *Snapshot)) {
	s.build.Lock()
	defer s.build.Unlock()
	current := s.cur.Load()
	s.version++
	next := Build(s.version, assemble(current))
	s.Publish(next)
	if report != nil {
		report(current, next)
	}
}

// Patch publishes the snapshot patch makes of the current one with the next version, when it can (ok); else it
// rebuilds as Rebuild does. Patches change no contest, so report is told of rebuilds only.
func (s *Store) Patch(patch func(current *Snapshot, version uint64) (*Snapshot, bool),
	assemble func(current *Snapshot) Input, report func(current, next *Snapshot)) (patched bool) {
	s.build.Lock()
	defer s.build.Unlock()
	current := s.cur.Load()
	s.version++
	next, ok := patch(current, s.version)
	if !ok {
		next = Build(s.version, assemble(current))
	}
	s.Publish(next)
	if !ok && report != nil {
		report(current, next)
	}
	return ok
}

// Load returns the current snapshot.
func (s *Store) Load() *Snapshot { return s.cur.Load() }

// Publish makes snap current and wakes subscribers. A snapshot older than the
// current one is ignored, so racing publishers cannot go back in time.
func (s *Store) Publish(snap *Snapshot) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.cur.Load(); cur != nil && snap.version < cur.version {
		return false
	}
	s.cur.Store(snap)
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is already pending; the reader will Load the latest
		}
	}
	return true
}

// Subscribe returns a channel that receives a value after each Publish. It is
// 1-buffered: a slow reader skips stale versions and reads the latest.
func (s *Store) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs = append(s.subs, ch)
	s.mu.Unlock()
	return ch
}
