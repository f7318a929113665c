package hbone

import "sync"

// Revoker ends an established tunnel from outside (for example after a policy change): Revoke ends the tunnel it
// is bound to with FlagRevoked, at once if it is running, as soon as it starts if it has not yet. It costs no
// goroutine per tunnel. The zero value is ready to use; a Revoker serves one tunnel.
type Revoker struct {
	mu      sync.Mutex
	revoked bool
	end     func()
}

// Revoke ends the tunnel, now or when it starts. It may be called from any goroutine, more than once.
func (r *Revoker) Revoke() {
	r.mu.Lock()
	r.revoked = true
	end := r.end
	r.end = nil
	r.mu.Unlock()
	if end != nil {
		end()
	}
}

// bind makes end the way to end the tunnel, calling it at once if Revoke came first; unbind detaches it once the
// tunnel is over.
func (r *Revoker) bind(end func()) (unbind func()) {
	r.mu.Lock()
	if r.revoked {
		r.mu.Unlock()
		end()
		return func() {}
	}
	r.end = end
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		r.end = nil
		r.mu.Unlock()
	}
}
