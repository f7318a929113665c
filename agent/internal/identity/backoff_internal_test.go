package identity

import (
	"testing"
	"time"
)

func TestBackoffGrowsWithJitterAndResets(t *testing.T) {
	b := newBackoff(backoffMin, backoffMax)
	want := backoffMin
	for i := 0; i < 20; i++ {
		d := b.Next()
		lo, hi := time.Duration(float64(want)*0.8), time.Duration(float64(want)*1.2)
		if d < lo || d > hi {
			t.Fatalf("attempt %d: %s; want within ±20%% of %s", i, d, want)
		}
		want = min(2*want, backoffMax)
	}
	b.Reset()
	if d := b.Next(); d > time.Duration(float64(backoffMin)*1.2) {
		t.Errorf("after Reset: %s; want about %s", d, backoffMin)
	}
}
