// Package connlimit bounds what one source, and everyone together, may hold of a
// listener's resources (connections in their TLS handshake, open connections), so
// that one client that opens connections and never finishes them cannot take the
// agent's file descriptors from every other client.
//
// A Limiter counts per source address and in total; Acquire either takes one slot
// and returns its release, or says which limit refused it. It is a leaf: it
// imports the standard library only.
package connlimit

import (
	"net/netip"
	"sync"
)

// Why a slot was refused.
const (
	PerSource = "per_source"
	Total     = "total"
)

// Limiter counts slots held per source and in total. The zero value is not
// usable: use New.
type Limiter struct {
	maxTotal, maxPerSource int

	mu    sync.Mutex
	total int
	bySrc map[netip.Addr]int
}

// New returns a Limiter of at most maxTotal slots, at most maxPerSource of them
// held by one source address. A limit <= 0 is no limit.
func New(maxTotal, maxPerSource int) *Limiter {
	return &Limiter{maxTotal: maxTotal, maxPerSource: maxPerSource, bySrc: map[netip.Addr]int{}}
}

// Acquire takes a slot for src. It returns the function that gives the slot back
// (call it once), or nil and the limit that refused it (PerSource or Total).
// IPv4-mapped IPv6 addresses count as their IPv4 address.
func (l *Limiter) Acquire(src netip.Addr) (release func(), refused string) {
	src = src.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.maxTotal > 0 && l.total >= l.maxTotal:
		return nil, Total
	case l.maxPerSource > 0 && l.bySrc[src] >= l.maxPerSource:
		return nil, PerSource
	}
	l.total++
	l.bySrc[src]++
	var once sync.Once
	return func() { once.Do(func() { l.release(src) }) }, ""
}

func (l *Limiter) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.bySrc[src] - 1; n > 0 {
		l.bySrc[src] = n
	} else {
		delete(l.bySrc, src)
	}
}

// Held reports the slots held in total and by src.
func (l *Limiter) Held(src netip.Addr) (total, bySource int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.bySrc[src.Unmap()]
}
