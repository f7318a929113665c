package identity

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// spireSource streams X.509 SVIDs from the SPIRE agent's Workload API. SPIRE hands a process one SVID per
// registration entry that selects it, so a host agent serving several workloads is registered once per workload
// (same selectors, one SPIFFE ID each); the source keeps the SVIDs of the wanted identities and ignores the rest.
type spireSource struct {
	*store
	socket string
	log    *slog.Logger

	// Owned by the goroutine that calls Run: go-spiffe calls the watcher methods from it.
	lastProblem string
}

func newSpireSource(socket string, td spiffeid.TrustDomain, want []spiffeid.ID, log *slog.Logger, now func() time.Time) *spireSource {
	return &spireSource{store: newStore(td, want, now), socket: socket, log: log}
}

// Run watches the Workload API until ctx is done. While the socket is missing or SPIRE has nothing for us, it
// retries with backoff and the source stays not ready.
func (s *spireSource) Run(ctx context.Context) error {
	client, err := workloadapi.New(ctx,
		workloadapi.WithAddr("unix://"+s.socket),
		workloadapi.WithBackoffStrategy(backoffStrategy{min: backoffMin, max: backoffMax}),
		workloadapi.WithDialOptions(grpcConnectParams()),
	)
	if err != nil {
		return fmt.Errorf("identity: spire workload API %s: %w", s.socket, err)
	}
	defer client.Close()
	s.log.Info("identity: watching the SPIRE workload API", "socket", s.socket)
	retry := newBackoff(backoffMin, backoffMax)
	for {
		// WatchX509Context retries by itself; it returns only when ctx is done or SPIRE refuses the request.
		err := client.WatchX509Context(ctx, s)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Error("identity: SPIRE workload API watch ended; retrying", "socket", s.socket, "err", err)
		if !sleep(ctx, retry.Next()) {
			return nil
		}
	}
}

// OnX509ContextWatchError implements workloadapi.X509ContextWatcher.
func (s *spireSource) OnX509ContextWatchError(err error) {
	if status.Code(err) == codes.Canceled {
		return
	}
	msg := "identity: SPIRE workload API unavailable; retrying (not ready until every identity has a certificate)"
	if status.Code(err) == codes.PermissionDenied {
		msg = "identity: SPIRE issued no identity to this process; register one entry per local workload " +
			"(spiffeID = the workload's identity, selectors matching the agent, e.g. unix:uid)"
	}
	s.log.Warn(msg, "socket", s.socket, "err", err)
}

// OnX509ContextUpdate implements workloadapi.X509ContextWatcher: it validates what SPIRE sent and publishes a new
// Snapshot. An invalid SVID never replaces a valid one; an identity SPIRE no longer issues is dropped.
func (s *spireSource) OnX509ContextUpdate(c *workloadapi.X509Context) {
	prev := s.Snapshot()
	now := s.now()
	next := &Snapshot{svids: make(map[spiffeid.ID]*heldSVID, len(s.want)), bundles: c.Bundles}
	var problems []string
	if !next.hasBundle(s.td) {
		problems = append(problems, fmt.Sprintf("SPIRE sent no trust bundle for %q; is SPIRE's trust domain the mesh's?", s.td))
		next.bundles = prev.bundles
	}
	issued := map[spiffeid.ID]*x509svid.SVID{}
	for _, svid := range c.SVIDs {
		if _, dup := issued[svid.ID]; !dup {
			issued[svid.ID] = svid
		}
	}
	for _, id := range s.want {
		old, hadOld := prev.svids[id]
		got, ok := issued[id]
		if !ok {
			problems = append(problems, fmt.Sprintf("SPIRE issued no SVID for %s; add a registration entry for it", id))
			continue
		}
		svid, err := newSVID(id, got.Certificates, got.PrivateKey, next, now)
		if err != nil {
			problems = append(problems, fmt.Sprintf("SVID for %s refused: %v", id, err))
		}
		if next.hold(id, svid, err, old, hadOld) {
			leaf := svid.Certificates[0]
			s.log.Info("identity: received SVID from SPIRE", "identity", id.String(),
				"serial", leaf.SerialNumber.Text(16), "notAfter", leaf.NotAfter)
		}
	}
	s.reportProblems(problems)
	if !sameSnapshot(prev, next) {
		s.publish(next)
	}
}

// sameSnapshot reports whether two Snapshots hold the same SVIDs and bundles, so that SPIRE's updates about
// identities we do not hold wake no one.
func sameSnapshot(a, b *Snapshot) bool {
	if len(a.svids) != len(b.svids) || a.bundles.Len() != b.bundles.Len() {
		return false
	}
	for id, h := range a.svids {
		if b.svids[id] != h {
			return false
		}
	}
	for _, ab := range a.bundles.Bundles() {
		bb, ok := b.bundles.Get(ab.TrustDomain())
		if !ok || !ab.Equal(bb) {
			return false
		}
	}
	return true
}

// reportProblems logs problems when they differ from the previous update's, not on every rotation.
func (s *spireSource) reportProblems(problems []string) {
	text := strings.Join(problems, "; ")
	if text == s.lastProblem {
		return
	}
	s.lastProblem = text
	if text == "" {
		s.log.Info("identity: every local identity has an SVID from SPIRE")
		return
	}
	for _, p := range problems {
		s.log.Error("identity: " + p)
	}
}
