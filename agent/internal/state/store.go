package state

import (
	"sync"
	"sync/atomic"
)

// Store holds the current snapshot. Readers call Load and never lock; writers
// publish a whole new snapshot; subscribers learn that a newer one exists.
type Store struct {
	cur  atomic.Pointer[Snapshot]
	mu   sync.Mutex
	subs []chan struct{}
}

// NewStore starts with snap (which must not be nil).
func NewStore(snap *Snapshot) *Store {
	s := &Store{}
	s.cur.Store(snap)
	return s
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
