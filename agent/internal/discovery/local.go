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

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// localRecord is this node's published record.
type localRecord struct {
	rec     *Record
	raw     []byte
	advert  advert
	content []byte // the encoding without the version: an unchanged record is not republished
}

// SetLocal publishes this node's record: it replaces the previous one everywhere. r is copied and normalized;
// Node, when set, must be this node's name. An invalid or oversized record is refused and the previous one stays.
// SetLocal may be called before Run (the record is published on joining) and at any time after.
func (d *Discovery) SetLocal(r Record) error {
	if r.Node != "" && r.Node != d.name {
		return fmt.Errorf("gossip: a record for node %q, this node is %q", r.Node, d.name)
	}
	rec := normalize(r)
	rec.Node = d.name
	rec.Address = d.LocalAddr()
	if rec.AgentVersion == "" {
		rec.AgentVersion = d.opts.AgentVersion
	}
	if err := validateRecord(rec); err != nil {
		return fmt.Errorf("gossip: local record: %w", err)
	}
	rec.Version = 0
	content := encodeRecord(rec)

	d.mu.Lock()
	if d.local != nil && bytes.Equal(d.local.content, content) {
		d.mu.Unlock()
		return nil
	}
	rec.Version = max(uint64(time.Now().UnixNano()), d.lastVersion()+1)
	raw := encodeRecord(rec)
	if len(raw) > MaxRecordBytes {
		d.mu.Unlock()
		return fmt.Errorf("gossip: local record is %d bytes encoded, the limit is %d (%d workloads, %d services)",
			len(raw), MaxRecordBytes, len(rec.Workloads), len(rec.Services))
	}
	d.local = &localRecord{rec: rec, raw: raw, advert: advertOf(raw, rec.Version), content: content}
	d.mu.Unlock()

	if msg := encodeMessage(kindBroadcast, raw); len(msg) <= maxBroadcastBytes {
		d.queue.QueueBroadcast(&recordBroadcast{name: "record/" + d.name, msg: msg})
	}
	select {
	case d.announce <- struct{}{}:
	default:
	}
	level := slog.LevelInfo
	if !rec.Address.IsValid() {
		level = slog.LevelDebug // before Run; published with the gossip address once it is bound
	}
	d.log.Log(context.Background(), level, "gossip: publishing this node's record", "version", rec.Version,
		"bytes", len(raw), "workloads", len(rec.Workloads), "services", len(rec.Services), "waypoint", rec.Waypoint != nil)
	return nil
}

// addressKnown puts the gossip address, known once the port is bound, into a record published before Run.
func (d *Discovery) addressKnown() error {
	d.mu.Lock()
	l := d.local
	d.mu.Unlock()
	if l == nil || l.rec.Address == d.LocalAddr() {
		return nil
	}
	return d.SetLocal(*l.rec)
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
	return out
}

func unmapAll(addrs []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		out[i] = a.Unmap()
	}
	return out
}
