package state

import (
	"hash/fnv"
	"net/netip"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

// VIP allocation (spec/routing.md): a service without explicit VIPs gets one
// from Istio's auto-allocation ranges, derived from its hostname alone, so
// that every agent computes the same address without coordination.
var (
	allocV4 = config.VIPRangeV4
	allocV6 = config.VIPRangeV6
)

// allocSlots is the number of usable offsets in the /16 (not .0.0 nor .255.255).
const allocSlots = 1<<16 - 2

// allocOffset is the first offset tried for a hostname.
func allocOffset(hostname string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(hostname))
	return h.Sum32()%allocSlots + 1
}

// allocAddr is the address at offset in the v4 or v6 range.
func allocAddr(offset uint32, v6 bool) netip.Addr {
	if v6 {
		b := allocV6.Addr().As16()
		b[14], b[15] = byte(offset>>8), byte(offset)
		return netip.AddrFrom16(b)
	}
	b := allocV4.Addr().As4()
	b[2], b[3] = byte(offset>>8), byte(offset)
	return netip.AddrFrom4(b)
}

// IsAllocated reports whether a lies in the auto-allocation ranges.
func IsAllocated(a netip.Addr) bool { return config.InVIPRanges(a) }

// allocator hands out VIPs, probing past taken offsets.
type allocator struct {
	taken func(netip.Addr) (string, bool)
}

// allocate returns the address for hostname and, when the first choice was
// taken, who held it.
func (al allocator) allocate(hostname string, v6 bool) (addr netip.Addr, collidedWith string) {
	off := allocOffset(hostname)
	for range allocSlots {
		a := allocAddr(off, v6)
		holder, taken := al.taken(a)
		if !taken {
			return a, collidedWith
		}
		if collidedWith == "" {
			collidedWith = holder
		}
		off = off%allocSlots + 1
	}
	return netip.Addr{}, collidedWith
}
