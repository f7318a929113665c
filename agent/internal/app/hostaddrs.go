package app

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// hostAddrs caches this host's interface addresses for a while: the waypoint
// role checks every upstream against them (proxy.Deps.HostAddrs), and a
// netlink dump per connection would cost more than the check.
type hostAddrs struct {
	now func() time.Time
	ttl time.Duration

	mu    sync.Mutex
	at    time.Time
	addrs []netip.Addr
}

func newHostAddrs(now func() time.Time, ttl time.Duration) *hostAddrs {
	return &hostAddrs{now: now, ttl: ttl}
}

// get returns the addresses, read again once they are older than ttl. When
// they cannot be read, the last ones stay.
func (h *hostAddrs) get() []netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now := h.now(); h.at.IsZero() || now.Sub(h.at) > h.ttl {
		if addrs, err := interfaceAddrs(); err == nil {
			h.addrs, h.at = addrs, now
		}
	}
	return h.addrs
}

func interfaceAddrs() ([]netip.Addr, error) {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(ifas))
	for _, ifa := range ifas {
		if p, err := netip.ParsePrefix(ifa.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out, nil
}
