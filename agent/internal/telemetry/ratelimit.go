package telemetry

import (
	"sync"
	"time"
)

// Limiter lets at most one event per key through per interval: per-connection
// warnings (a peer that keeps failing, a flood of bad requests) must not flood
// the journal. Suppressed events are counted and reported with the next one.
type Limiter struct {
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
	dropped  map[string]int
}

// NewLimiter returns a limiter of one event per key per interval.
func NewLimiter(interval time.Duration) *Limiter {
	return &Limiter{interval: interval, last: map[string]time.Time{}, dropped: map[string]int{}}
}

// Allow reports whether an event for key may be logged now and how many were
// suppressed since the last one that was.
func (l *Limiter) Allow(key string) (bool, int) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[key]; ok && now.Sub(t) < l.interval {
		l.dropped[key]++
		return false, 0
	}
	if len(l.last) > 10000 { // bound memory under a storm of distinct keys
		clear(l.last)
	}
	l.last[key] = now
	n := l.dropped[key]
	delete(l.dropped, key)
	return true, n
}
