package state

import (
	"reflect"
	"slices"
	"strings"
)

// Patches. Most changes of a mesh are of a workload's attributes: its health flips, its labels or capacity
// change, it is bound to a waypoint. None of these decide a contest (who holds an address, a hostname, a VIP, a
// service's definition), so a snapshot can take them without being built again: Patch puts the new versions of
// the workloads, and copies of the services they are endpoints of, over the snapshot it patches, and every
// lookup returns the newest version. A change of anything a contest reads (addresses, ports, identity, tunnel,
// origin, the workloads a node has, its service declarations) is not a patch: the caller builds.

// overlay is what the patches since the last build replaced: the newest version of each workload (by UID) and of
// each service (by key). Never changed once a snapshot holds it.
type overlay struct {
	workloads map[string]*Workload
	services  map[string]*Service
}

// maxOverlay bounds the workloads an overlay holds: each patch copies it, so past this many the caller builds
// the snapshot anew (which folds the overlay in). Building costs O(N log N), copying the overlay O(overlay).
const maxOverlay = 4096

// fresh is the newest version of w (w itself when no patch replaced it).
func (s *Snapshot) fresh(w *Workload) *Workload {
	if s.over != nil && w != nil {
		if n, ok := s.over.workloads[w.UID]; ok {
			return n
		}
	}
	return w
}

// freshService is the newest version of svc.
func (s *Snapshot) freshService(svc *Service) *Service {
	if s.over != nil && svc != nil {
		if n, ok := s.over.services[svc.Key()]; ok {
			return n
		}
	}
	return svc
}

// Patch returns s with the workloads of the gossip nodes in nodes (node name -> all its workloads now, as
// discovery derives them) replaced, numbered version, when every change is of attributes only (see above);
// ok is false otherwise, and the caller builds the snapshot from its whole input instead.
func (s *Snapshot) Patch(version uint64, nodes map[string][]*Workload) (_ *Snapshot, ok bool) {
	repl := map[string]*Workload{}
	var keys []string // of the services to copy
	for node, ws := range nodes {
		if len(ws) != s.nodeCount[node] {
			return nil, false
		}
		ws = slices.SortedFunc(slices.Values(ws), func(a, b *Workload) int { return strings.Compare(a.UID, b.UID) })
		changed := false
		for i, w := range ws {
			// The same number of workloads, each of the node's and none twice: the same set.
			base := s.byUID[w.UID]
			if base == nil || base.Node != node || !gossiped(base) || (i > 0 && ws[i-1].UID == w.UID) {
				return nil, false
			}
			cur := s.fresh(base)
			if cur == w {
				continue
			}
			if !sameClaims(cur, w) {
				return nil, false
			}
			if reflect.DeepEqual(cur, w) { // a record signed again, its workloads as they were
				continue
			}
			repl[w.UID] = w
			changed = true
		}
		if changed {
			keys = append(keys, s.nodeSvcs[node]...)
		}
	}
	return s.patch(version, repl, keys)
}

// PatchIstiod is Patch for workloads learned from istiod: ws replace the workloads of their UIDs, when each
// is known from istiod and differs in attributes only.
func (s *Snapshot) PatchIstiod(version uint64, ws []*Workload) (_ *Snapshot, ok bool) {
	repl := make(map[string]*Workload, len(ws))
	var keys []string
	for _, w := range ws {
		cur := s.fresh(s.byUID[w.UID])
		switch {
		case cur == w:
			continue
		case cur == nil || cur.Origin != OriginIstiod || !sameClaims(cur, w):
			return nil, false
		case reflect.DeepEqual(cur, w):
			continue
		}
		repl[w.UID] = w
		keys = append(keys, s.uidSvcs[w.UID]...)
	}
	return s.patch(version, repl, keys)
}

// patch is s with the workloads of repl (by UID) and copies of the services of keys that have them as
// endpoints put over it, numbered version.
func (s *Snapshot) patch(version uint64, repl map[string]*Workload, keys []string) (*Snapshot, bool) {
	next := *s
	next.version = version
	if len(repl) == 0 {
		return &next, true
	}
	base := 0
	if s.over != nil {
		base = len(s.over.workloads)
	}
	if base+len(repl) > maxOverlay {
		return nil, false
	}
	over := &overlay{workloads: make(map[string]*Workload, base+len(repl)), services: map[string]*Service{}}
	if s.over != nil {
		for k, v := range s.over.workloads {
			over.workloads[k] = v
		}
		for k, v := range s.over.services {
			over.services[k] = v
		}
	}
	for uid, w := range repl {
		over.workloads[uid] = w
	}
	copied := make(map[string]bool, len(keys))
	for _, key := range keys {
		if copied[key] {
			continue
		}
		copied[key] = true
		svc := s.freshService(s.svcByKey[key])
		if svc == nil {
			continue
		}
		c := *svc
		c.Endpoints = slices.Clone(svc.Endpoints)
		for i, e := range c.Endpoints {
			if w, ok := repl[e.UID]; ok {
				ep := *e
				ep.Workload = w
				c.Endpoints[i] = &ep
			}
		}
		over.services[key] = &c
	}
	next.over = over
	return &next, true
}

// sameClaims reports whether b differs from a, the same workload, only in attributes no contest reads.
func sameClaims(a, b *Workload) bool {
	return a.UID == b.UID && a.Name == b.Name && a.Namespace == b.Namespace && a.ServiceAccount == b.ServiceAccount &&
		a.TrustDomain == b.TrustDomain && slices.Equal(a.Addresses, b.Addresses) && a.Hostname == b.Hostname &&
		a.Network == b.Network && a.Node == b.Node && a.Tunnel == b.Tunnel && slices.Equal(a.Ports, b.Ports) &&
		a.Primary == b.Primary && a.Local == b.Local && a.Origin == b.Origin && a.AddressProven == b.AddressProven
}

// indexNodes counts, per gossip node, its workloads in use and lists the services they are endpoints of,
// and per workload from istiod the services it is an endpoint of: what patches replace.
func (s *Snapshot) indexNodes() {
	s.nodeCount = map[string]int{}
	for _, w := range s.workloads {
		if gossiped(w) {
			s.nodeCount[w.Node]++
		}
	}
	s.nodeSvcs, s.uidSvcs = map[string][]string{}, map[string][]string{}
	for _, svc := range s.services {
		key := svc.Key()
		for _, e := range svc.Endpoints {
			switch w := e.Workload; {
			case gossiped(w) && s.byUID[w.UID] == w:
				if keys := s.nodeSvcs[w.Node]; len(keys) == 0 || keys[len(keys)-1] != key {
					s.nodeSvcs[w.Node] = append(keys, key)
				}
			case w.Origin == OriginIstiod && !w.Local:
				if keys := s.uidSvcs[w.UID]; len(keys) == 0 || keys[len(keys)-1] != key {
					s.uidSvcs[w.UID] = append(keys, key)
				}
			}
		}
	}
}

func gossiped(w *Workload) bool {
	return !w.Local && (w.Origin == OriginGossip || w.Origin == OriginUnsigned)
}
