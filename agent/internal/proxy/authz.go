package proxy

import (
	"net/netip"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// authzConn is how authorization sees an inbound connection to w.
func authzConn(w *state.Workload, dst netip.AddrPort, peer spiffeid.ID, src netip.Addr) policy.Conn {
	return policy.Conn{
		DestNamespace:  w.Namespace,
		DestLabels:     w.Labels,
		DestIP:         dst.Addr(),
		DestPort:       dst.Port(),
		SourceIdentity: peer,
		SourceIP:       src,
		BoundPolicies:  w.AuthorizationPolicies,
	}
}

// authorize evaluates c against the current policy set, counts the decision
// and logs dry-run outcomes (never enforced).
func (d *Deps) authorize(c policy.Conn) policy.Decision {
	return d.count(c, d.Policy().Evaluate(c))
}

// count records a decision made for c.
func (d *Deps) count(c policy.Conn, dec policy.Decision) policy.Decision {
	outcome := "allow"
	if !dec.Allow {
		outcome = "deny"
	}
	d.Metrics.PolicyDecisions.WithLabelValues(outcome).Inc()
	if dec.DryRun != nil && dec.DryRun.Allow != dec.Allow {
		d.Log.Info("dry-run policy would change the decision", "dst", netip.AddrPortFrom(c.DestIP, c.DestPort),
			"source_identity", idString(c.SourceIdentity), "enforced", dec.Outcome.String(), "dry_run", dec.DryRun.String())
	}
	return dec
}

// Live tracks the inbound connections that authorization allowed, so that a
// policy change can re-evaluate them and end those no longer allowed.
type Live struct {
	mu    sync.Mutex
	conns map[*liveConn]struct{}
}

type liveConn struct {
	allowed func(*policy.Set) bool
	end     func()
	once    sync.Once
}

// NewLive returns an empty registry.
func NewLive() *Live { return &Live{conns: map[*liveConn]struct{}{}} }

// add registers an allowed connection; end closes it. The returned func
// removes it again when the connection ends by itself.
func (l *Live) add(c policy.Conn, end func()) func() {
	return l.addFunc(func(set *policy.Set) bool { return set.Evaluate(c).Allow }, end)
}

// addFunc registers a connection that allowed decides on.
func (l *Live) addFunc(allowed func(*policy.Set) bool, end func()) func() {
	lc := &liveConn{allowed: allowed, end: end}
	l.mu.Lock()
	l.conns[lc] = struct{}{}
	l.mu.Unlock()
	return func() { l.remove(lc) }
}

// remove stops tracking a connection that ended by itself.
func (l *Live) remove(lc *liveConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, lc)
}

// Reevaluate ends every live connection that set no longer allows and returns
// how many it ended.
func (l *Live) Reevaluate(set *policy.Set) int {
	denied := l.untrackDenied(set)
	for _, lc := range denied {
		lc.once.Do(lc.end)
	}
	return len(denied)
}

// untrackDenied stops tracking the connections set no longer allows, and
// returns them, for ending outside the lock.
func (l *Live) untrackDenied(set *policy.Set) []*liveConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	var denied []*liveConn
	for lc := range l.conns {
		if !lc.allowed(set) {
			denied = append(denied, lc)
			delete(l.conns, lc)
		}
	}
	return denied
}

// Len is the number of live connections tracked.
func (l *Live) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}
