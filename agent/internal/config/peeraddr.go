package config

import "net/netip"

// What a peer's gossip record may name (docs/gossip.md, "Trust"): the same rules refuse a host's own
// configuration, so that a host never publishes what its peers drop, and check what peers send.

// IsMetadata reports whether a is a cloud metadata service's address (169.254.169.254, fd00:ec2::254).
func IsMetadata(a netip.Addr) bool {
	a = a.Unmap()
	return a == netip.AddrFrom4([4]byte{169, 254, 169, 254}) || a == metadataV6
}

var metadataV6 = netip.MustParseAddr("fd00:ec2::254")

// InVIPRanges reports whether a is in the VIP allocation ranges.
func InVIPRanges(a netip.Addr) bool {
	a = a.Unmap()
	return VIPRangeV4.Contains(a) || VIPRangeV6.Contains(a)
}

// HostAddrProblem says why a cannot be a workload's or a waypoint's address in gossip ("" when it can): no
// host of the mesh has a link-local or metadata address, and the VIP ranges are services'.
func HostAddrProblem(a netip.Addr) string {
	switch a = a.Unmap(); {
	case a.IsLinkLocalUnicast() || IsMetadata(a):
		return "link-local or the metadata service's"
	case InVIPRanges(a):
		return "in the VIP allocation ranges"
	}
	return ""
}

// AllowedVIP reports whether a peer may declare a as an explicit service VIP: in the allocation ranges or
// in allowed ([gossip] allowed_vips), and never an address that would capture loopback, link-local,
// metadata or multicast traffic.
func AllowedVIP(a netip.Addr, allowed []netip.Prefix) bool {
	a = a.Unmap()
	if !a.IsGlobalUnicast() || a.IsLinkLocalUnicast() || IsMetadata(a) {
		return false
	}
	if InVIPRanges(a) {
		return true
	}
	for _, p := range allowed {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
