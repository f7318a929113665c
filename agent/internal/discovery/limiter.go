package discovery

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// limiter rate-limits warnings per key: the first one of an interval is logged, the others are counted and the
// count is reported with the next one logged. Keys come from a closed set (drop reasons, log prefixes), so the
// map stays small.
type limiter struct {
	log      *slog.Logger
	interval time.Duration

	mu   sync.Mutex
	last map[string]time.Time
	skip map[string]int
}

func newLimiter(log *slog.Logger, interval time.Duration) *limiter {
	return &limiter{log: log, interval: interval, last: map[string]time.Time{}, skip: map[string]int{}}
}

// maxLimiterKeys bounds the keys remembered; old ones are forgotten first.
const maxLimiterKeys = 256

// forget drops the keys outside the interval (all of them if that is not enough).
func (l *limiter) forget(now time.Time) {
	for k, t := range l.last {
		if now.Sub(t) >= l.interval {
			delete(l.last, k)
			delete(l.skip, k)
		}
	}
	if len(l.last) >= maxLimiterKeys {
		clear(l.last)
		clear(l.skip)
	}
}

// logf logs msg at level unless a message with key was logged within the interval.
func (l *limiter) logf(level slog.Level, key, msg string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	now := time.Now()
	l.mu.Lock()
	if t, seen := l.last[key]; seen && now.Sub(t) < l.interval {
		l.skip[key]++
		l.mu.Unlock()
		return
	}
	if len(l.last) >= maxLimiterKeys {
		l.forget(now)
	}
	skipped := l.skip[key]
	l.last[key] = now
	delete(l.skip, key)
	l.mu.Unlock()
	if skipped > 0 {
		args = append(args, "suppressed", skipped)
	}
	l.log.Log(context.Background(), level, msg, args...)
}
