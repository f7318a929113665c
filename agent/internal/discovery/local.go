package discovery

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// localRecord is this node's published record.
type localRecord struct {
	rec      *Record
	raw      []byte
	advert   advert
	content  []byte    // the encoding without the version, and the serials that sign it: unchanged is not republished
	resignAt time.Time // when the signatures are renewed
}

// SetLocal publishes this node's record: it replaces the previous one everywhere. r is copied and normalized;
// Node, when set, must be this node's name. An invalid or oversized record is refused and the previous one stays.
// Only the claims this node can prove now are published (see publish); the others follow when their
// certificates arrive (call Resign). SetLocal may be called before Run (the record is published on joining) and
// at any time after.
func (d *Discovery) SetLocal(r Record) error {
	if r.Node != "" && r.Node != d.name {
		return fmt.Errorf("gossip: a record for node %q, this node is %q", r.Node, d.name)
	}
	want := normalize(r)
	want.Node = d.name
	want.Address = d.LocalAddr()
	if want.AgentVersion == "" {
		want.AgentVersion = d.opts.AgentVersion
	}
	if err := validateRecord(want); err != nil {
		return fmt.Errorf("gossip: local record: %w", err)
	}
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	prev := d.want
	d.want = want
	if err := d.publish(false); err != nil {
		d.want = prev // the previous record stays, as it is
		return err
	}
	return nil
}

// Resign publishes this node's record again when the certificates that sign it changed (a rotation, or one
// that arrived): call it when the identities change.
func (d *Discovery) Resign() error {
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	return d.publish(false)
}

// resignIfDue renews the signatures of this node's record before they expire, and publishes a first record
// that waited for its certificates.
func (d *Discovery) resignIfDue(now time.Time) {
	d.mu.Lock()
	due := d.local != nil && !now.Before(d.local.resignAt)
	waiting := d.local == nil
	d.mu.Unlock()
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	if now.Before(d.nextAttempt) || !due && !waiting && !d.pace.deferred {
		return
	}
	if err := d.publish(due); err != nil {
		d.log.Error("gossip: publishing this node's record", "err", err)
		d.nextAttempt = now.Add(minResign) // try again later, not at every tick
	}
}

// minResign bounds how often this node's record is signed again.
const minResign = time.Minute

// publish signs the wanted record with the certificates held now and publishes it, unless it is the one
// published already and its signatures are not due. Callers hold pubMu.
func (d *Discovery) publish(force bool) error {
	if d.want == nil {
		return nil
	}
	rec, svids, awaited := d.provable(d.want, time.Now())
	if awaited > 0 && d.local == nil && time.Since(d.created) < d.opts.GracePeriod {
		// The first record of this process waits (for the grace period at most, peers keep the previous one that
		// long) for the certificates of all its claims: a record that leaves claims out lets peers give them away.
		return nil
	}
	rec.Version = 0
	content := encodeRecord(rec)
	for _, s := range svids {
		content = append(content, s.Certificates[0].SerialNumber.Bytes()...)
	}
	now := time.Now()
	d.mu.Lock()
	if !force && d.local != nil && bytes.Equal(d.local.content, content) && now.Before(d.local.resignAt) {
		d.mu.Unlock()
		d.pace.deferred = false
		return nil
	}
	first := d.local == nil
	rec.Version = max(uint64(now.UnixNano()), d.lastVersion()+1)
	d.mu.Unlock()
	raw, expires, err := signRecord(encodeRecord(rec), svids, now)
	if err != nil {
		return fmt.Errorf("gossip: local record: %w", err)
	}
	if len(raw) > MaxRecordBytes {
		return fmt.Errorf("gossip: local record is %d bytes encoded, the limit is %d (%d workloads, %d services, %d proofs)",
			len(raw), MaxRecordBytes, len(rec.Workloads), len(rec.Services), len(svids))
	}
	// A change waits for its turn (renewals and the first record do not); the maintenance tick publishes the
	// record wanted then. Checked once the record is known to be publishable, so that SetLocal refuses what
	// could never be published, whether it waits or not.
	if !d.pace.take(now, d.tuning.PublishBurst, d.tuning.PublishEvery, force || first) {
		d.pace.deferred = true
		return nil
	}
	d.pace.deferred, d.nextAttempt = false, time.Time{}
	d.mu.Lock()
	d.local = &localRecord{rec: rec, raw: raw, advert: advertOf(raw, rec.Version), content: content,
		resignAt: now.Add(max(min(resignAfter, expires.Sub(now)/2), minResign))}
	d.mu.Unlock()

	d.broadcast(d.name, raw, cut(d.name, rec.Version, raw))
	select {
	case d.announce <- struct{}{}:
	default:
	}
	level := slog.LevelInfo
	if !rec.Address.IsValid() || force {
		level = slog.LevelDebug // before Run (published with the gossip address once it is bound), or a renewal
	}
	d.log.Log(context.Background(), level, "gossip: publishing this node's record", "version", rec.Version,
		"bytes", len(raw), "workloads", len(rec.Workloads), "services", len(rec.Services), "waypoint", rec.Waypoint != nil, "gateway", rec.Gateway != nil,
		"proofs", len(svids))
	return nil
}

// publishPace is a token bucket of this node's record changes: burst at once, then one every interval.
type publishPace struct {
	tokens   float64
	at       time.Time // when tokens was counted
	deferred bool      // a change waits for a token: the maintenance tick publishes the record wanted then
}

// take reports whether a change may be published at now, and takes its token; free ones (renewals, the first
// record) always may, and take one if there is one.
func (p *publishPace) take(now time.Time, burst int, every time.Duration, free bool) bool {
	if p.at.IsZero() {
		p.tokens = float64(burst)
	} else {
		p.tokens = min(float64(burst), p.tokens+float64(now.Sub(p.at))/float64(every))
	}
	p.at = now
	switch {
	case p.tokens >= 1:
		p.tokens--
	case !free:
		return false
	}
	return true
}

// provable is the part of want this node can prove now, the SVIDs that prove it, and how many claims it leaves
// out for a certificate it does not hold yet (others it leaves out for good): the workloads and the waypoint whose identity has a currently valid certificate that peers accept (within
// the proof limits; IP SANs, when it has any, naming their addresses), and the services still backed by one of
// them. What it leaves out is logged.
func (d *Discovery) provable(want *Record, now time.Time) (*Record, []*x509svid.SVID, int) {
	rec := *want
	rec.Workloads, rec.Services, rec.Waypoint, rec.Gateway, rec.Proofs = nil, nil, nil, nil, nil
	var svids []*x509svid.SVID
	awaited := 0
	prove := func(what, td, ns, sa string, addrs []netip.Addr) bool {
		id, err := identityOf(td, ns, sa)
		if err != nil {
			return false
		}
		i := slices.IndexFunc(svids, func(x *x509svid.SVID) bool { return x.ID == id })
		s, ok := d.opts.Trust.SVID(id)
		if i >= 0 {
			s = svids[i] // signing already: the limits were checked
		} else if why := unusableSVID(s, ok, now, len(svids)); why != "" {
			if !ok {
				awaited++
			}
			d.warn.logf(warnLevel, "unproven:"+what, "gossip: not publishing a claim this node cannot prove (yet)",
				"claim", what, "identity", id, "why", why)
			return false
		}
		if sans := ipSANs(s.Certificates[0]); len(sans) > 0 && !(proven{ids: map[spiffeid.ID][]netip.Addr{id: sans}}).addressesProven(id, addrs) {
			d.warn.logf(slog.LevelError, "sans:"+what, "gossip: not publishing a claim of addresses its certificate does not name",
				"claim", what, "addresses", addrs, "ip_sans", sans)
			return false
		}
		if i < 0 {
			svids = append(svids, s)
		}
		return true
	}
	kept := map[string]bool{}
	for _, w := range want.Workloads {
		key := w.Namespace + "/" + w.Name
		if prove("workload "+key, w.TrustDomain, w.Namespace, w.ServiceAccount, w.Addresses) {
			rec.Workloads = append(rec.Workloads, w)
			kept[key] = true
		}
	}
	for _, s := range want.Services {
		c := s
		c.Workloads = slices.DeleteFunc(slices.Clone(s.Workloads), func(w string) bool { return !kept[w] })
		if len(c.Workloads) > 0 {
			rec.Services = append(rec.Services, c)
		}
	}
	if w := want.Waypoint; w != nil && prove("waypoint", w.TrustDomain, w.Namespace, w.ServiceAccount, w.Addresses) {
		rec.Waypoint = w
	}
	if g := want.Gateway; g != nil && prove("gateway", g.TrustDomain, g.Namespace, g.ServiceAccount, g.Addresses) {
		rec.Gateway = g
	}
	return &rec, svids, awaited
}

// unusableSVID says why an SVID cannot sign a claim peers would accept ("" when it can): missing, not valid
// now, over the proof limits, or one identity too many (held is how many sign already).
func unusableSVID(s *x509svid.SVID, ok bool, now time.Time, held int) string {
	switch {
	case !ok || s == nil || len(s.Certificates) == 0:
		return "no certificate"
	case now.Before(s.Certificates[0].NotBefore) || !now.Before(s.Certificates[0].NotAfter):
		return "the certificate is not valid now"
	case len(s.Certificates) > maxChainCerts:
		return fmt.Sprintf("a chain of more than %d certificates", maxChainCerts)
	case held >= maxProofs:
		return fmt.Sprintf("more than %d identities in one record", maxProofs)
	}
	for _, c := range s.Certificates {
		if len(c.Raw) > maxCertBytes {
			return fmt.Sprintf("a certificate over %d bytes", maxCertBytes)
		}
	}
	return ""
}

// addressKnown puts the gossip address, known once the port is bound, into a record published before Run.
func (d *Discovery) addressKnown() error {
	d.mu.Lock()
	l := d.local
	d.mu.Unlock()
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	if l != nil && l.rec.Address == d.LocalAddr() {
		return nil
	}
	if d.want != nil { // also a first record still waiting for its certificates
		w := *d.want
		w.Address = d.LocalAddr()
		d.want = &w
	}
	return d.publish(false)
}

// Local returns this node's published record, if any. It is shared: do not modify it.
func (d *Discovery) Local() (Record, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.local == nil {
		return Record{}, false
	}
	return *d.local.rec, true
}

func (d *Discovery) lastVersion() uint64 {
	if d.local == nil {
		return 0
	}
	return d.local.rec.Version
}

// announceLoop re-advertises this node's metadata (the digest of its record) after SetLocal.
func (d *Discovery) announceLoop(ctx context.Context, ml *memberlist.Memberlist) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.announce:
		}
		if err := ml.UpdateNode(d.tuning.LeaveTimeout); err != nil {
			d.log.Debug("gossip: advertising the new record", "err", err)
		}
	}
}

// normalize deep-copies a record into its canonical form: addresses unmapped, everything sorted, so that equal
// content encodes to equal bytes.
func normalize(r Record) *Record {
	out := &Record{Node: r.Node, AgentVersion: r.AgentVersion, Address: r.Address}
	for _, w := range r.Workloads {
		if w == nil {
			out.Workloads = append(out.Workloads, nil) // validation reports it
			continue
		}
		c := *w
		c.UID, c.Node, c.Local = "", "", false
		c.Addresses = unmapAll(w.Addresses)
		c.Labels = maps.Clone(w.Labels)
		out.Workloads = append(out.Workloads, &c)
	}
	slices.SortStableFunc(out.Workloads, func(a, b *state.Workload) int {
		if a == nil || b == nil {
			return 0
		}
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	for _, s := range r.Services {
		c := s
		c.Addresses = unmapAll(s.Addresses)
		c.Ports = slices.Clone(s.Ports)
		slices.SortFunc(c.Ports, func(a, b ServicePort) int { return cmp.Compare(a.Port, b.Port) })
		c.Workloads = slices.Sorted(slices.Values(s.Workloads))
		out.Services = append(out.Services, c)
	}
	slices.SortStableFunc(out.Services, func(a, b Service) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	if r.Waypoint != nil {
		w := *r.Waypoint
		w.Addresses = unmapAll(w.Addresses)
		out.Waypoint = &w
	}
	if r.Gateway != nil {
		g := *r.Gateway
		g.Addresses = unmapAll(g.Addresses)
		out.Gateway = &g
	}
	return out
}

func unmapAll(addrs []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		out[i] = a.Unmap()
	}
	return out
}
