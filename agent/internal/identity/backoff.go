package identity

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
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

// sleep waits d, or until ctx is done; it reports whether the whole of d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// grpcConnectParams keep gRPC's own reconnect backoff short (its default grows to 2 minutes), so that a server
// that comes back (a SPIRE socket that appears, istiod restarted) is used by the next attempt, whose pace our
// backoff sets.
func grpcConnectParams() grpc.DialOption {
	return grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           grpcbackoff.Config{BaseDelay: backoffMin, Multiplier: 1.6, Jitter: backoffJitter, MaxDelay: 5 * time.Second},
		MinConnectTimeout: 5 * time.Second,
	})
}
