package identity

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// NewStatic returns a Source holding fixed certificates for td, validated like the other sources' (valid now,
// matching key, one SPIFFE URI SAN of td, chaining to the bundle of td). bundles must hold td's bundle and may
// hold federated ones. It is for tests of the packages that take a Source; the agent itself uses New.
func NewStatic(td spiffeid.TrustDomain, svids []*x509svid.SVID, bundles ...*x509bundle.Bundle) (Source, error) {
	now := time.Now()
	snap := &Snapshot{svids: map[spiffeid.ID]*heldSVID{}, bundles: x509bundle.NewSet(bundles...)}
	if !snap.hasBundle(td) {
		return nil, fmt.Errorf("identity: static source: no trust bundle for %q", td)
	}
	var want []spiffeid.ID
	for _, s := range svids {
		if s == nil || len(s.Certificates) == 0 {
			return nil, errors.New("identity: static source: empty SVID")
		}
		if !s.ID.MemberOf(td) {
			return nil, fmt.Errorf("identity: static source: %s is not in trust domain %q", s.ID, td)
		}
		v, err := newSVID(s.ID, s.Certificates, s.PrivateKey, snap, now)
		if err != nil {
			return nil, fmt.Errorf("identity: static source: %s: %w", s.ID, err)
		}
		snap.svids[v.ID] = newHeldSVID(v)
		want = append(want, v.ID)
	}
	st := &staticSource{store: newStore(td, want, time.Now)}
	st.publish(snap)
	return st, nil
}

type staticSource struct{ *store }

// Run waits for ctx: nothing changes.
func (s *staticSource) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
