package connlimit

import (
	"net/netip"
	"testing"
)

func TestLimits(t *testing.T) {
	l := New(3, 2)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	r1, _ := l.Acquire(a)
	r2, _ := l.Acquire(netip.MustParseAddr("::ffff:10.0.0.1")) // the same source, mapped
	if r, why := l.Acquire(a); r != nil || why != PerSource {
		t.Fatalf("a third slot of one source: %v %q, want refused per source", r != nil, why)
	}
	r3, why := l.Acquire(b)
	if r3 == nil {
		t.Fatalf("another source refused: %q", why)
	}
	if r, why := l.Acquire(netip.MustParseAddr("10.0.0.3")); r != nil || why != Total {
		t.Fatalf("past the total: %v %q, want refused in total", r != nil, why)
	}
	r1()
	r1() // a second release gives nothing back
	if total, byA := l.Held(a); total != 2 || byA != 1 {
		t.Fatalf("after one release: total %d, a %d; want 2, 1", total, byA)
	}
	if r, _ := l.Acquire(a); r == nil {
		t.Fatal("a released slot is not available again")
	}
	r2()
	r3()
	if total, _ := l.Held(a); total != 1 {
		t.Fatalf("total %d, want 1", total)
	}
	if n := len(l.bySrc); n != 1 {
		t.Fatalf("%d sources tracked, want 1 (released ones are forgotten)", n)
	}
}

func TestNoLimit(t *testing.T) {
	l := New(0, 0)
	for range 1000 {
		if r, why := l.Acquire(netip.MustParseAddr("10.0.0.1")); r == nil {
			t.Fatalf("refused without limits: %s", why)
		}
	}
}
