package hbone

import "testing"

// A Revoker ends its tunnel once: at once when bound, at bind when Revoke came
// first, and never after the tunnel is over (unbound).
func TestRevoker(t *testing.T) {
	var r Revoker
	n := 0
	unbind := r.bind(func() { n++ })
	r.Revoke()
	r.Revoke()
	unbind()
	if n != 1 {
		t.Errorf("bound, revoked twice: end called %d times, want 1", n)
	}

	var early Revoker
	early.Revoke()
	m := 0
	early.bind(func() { m++ })()
	if m != 1 {
		t.Errorf("revoked before the tunnel started: end called %d times at bind, want 1", m)
	}

	var late Revoker
	k := 0
	late.bind(func() { k++ })()
	late.Revoke()
	if k != 0 {
		t.Errorf("revoked after the tunnel ended: end called %d times, want 0", k)
	}
}
