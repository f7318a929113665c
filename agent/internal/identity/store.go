package identity

import (
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// store is what every Source shares: the current Snapshot, swapped atomically, and the change notification.
type store struct {
	td      spiffeid.TrustDomain
	want    []spiffeid.ID
	now     func() time.Time
	current atomic.Pointer[Snapshot]
	changed chan struct{}
}

func newStore(td spiffeid.TrustDomain, want []spiffeid.ID, now func() time.Time) *store {
	s := &store{td: td, want: want, now: now, changed: make(chan struct{}, 1)}
	s.current.Store(emptySnapshot())
	return s
}

// publish makes snap the current Snapshot and wakes a waiting reader. Readers that are behind see only the
// latest Snapshot: the channel holds at most one pending notification.
func (s *store) publish(snap *Snapshot) {
	s.current.Store(snap)
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Snapshot returns the current Snapshot; never nil.
func (s *store) Snapshot() *Snapshot { return s.current.Load() }

// Changed receives a value after the Snapshot has changed.
func (s *store) Changed() <-chan struct{} { return s.changed }

// Certificates lists the certificates of the current Snapshot.
func (s *store) Certificates() []CertInfo { return s.Snapshot().Certificates() }

// Ready reports whether every wanted identity has a currently valid certificate and the trust bundle of our
// trust domain is there. It turns false again if a certificate expires without being replaced.
func (s *store) Ready() bool { return s.missing() == nil }

// missing lists the wanted identities without a currently valid certificate, and reports a missing bundle as
// the zero ID.
func (s *store) missing() []spiffeid.ID {
	snap := s.Snapshot()
	now := s.now()
	var out []spiffeid.ID
	if !snap.hasBundle(s.td) {
		out = append(out, spiffeid.ID{})
	}
	for _, id := range s.want {
		h, ok := snap.svids[id]
		if !ok || checkValidity(h.svid.Certificates[0], now) != nil {
			out = append(out, id)
		}
	}
	return out
}
