package identity

import (
	"math/rand/v2"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// Retry delays of spec/identity.md: exponential from 0.5 s to 150 s, with ±20% jitter.
const (
	backoffMin    = 500 * time.Millisecond
	backoffMax    = 150 * time.Second
	backoffJitter = 0.2
)

// backoff is an exponential backoff with jitter. It implements workloadapi.Backoff; not safe for concurrent use.
type backoff struct {
	min, max time.Duration
	next     time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, next: min} }

// Next returns the delay before the next attempt and doubles the one after it, up to max.
func (b *backoff) Next() time.Duration {
	d := b.next
	b.next = min(2*b.next, b.max)
	jitter := 1 + backoffJitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * jitter)
}

// Reset starts again from min, after a success.
func (b *backoff) Reset() { b.next = b.min }

// backoffStrategy gives go-spiffe's Workload API client our retry delays.
type backoffStrategy struct{ min, max time.Duration }

func (s backoffStrategy) NewBackoff() workloadapi.Backoff { return newBackoff(s.min, s.max) }
