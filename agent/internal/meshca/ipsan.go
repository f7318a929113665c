package meshca

import (
	"fmt"
	"net"
	"net/netip"
)

// ParseIPSAN parses s as an address to put in a workload certificate's IP SANs. An IPv4-mapped IPv6 address
// comes back as IPv4, the form x509 encodes it in anyway, so that what the caller holds is what the
// certificate says. The error names s as given.
func ParseIPSAN(s string) (netip.Addr, error) {
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("meshca: IP SAN %q is not an IP address", s)
	}
	if why := ipSANProblem(addr); why != "" {
		return netip.Addr{}, fmt.Errorf("meshca: IP SAN %q %s", s, why)
	}
	return addr.Unmap(), nil
}

// ipSANProblem says why addr cannot be a workload's own address, or "" if it can. An IP SAN is a claim that
// agents on other hosts accept, so it must name one workload wherever the certificate is read.
func ipSANProblem(addr netip.Addr) string {
	if !addr.IsValid() {
		return "is not an IP address"
	}
	if addr.Zone() != "" {
		return "has a zone, which means something on one host only"
	}
	// Unmapped first: netip calls ::ffff:0.0.0.0 specified.
	switch addr = addr.Unmap(); {
	case addr.IsUnspecified():
		return "is unspecified, the address of no host"
	case addr.IsMulticast():
		return "is multicast, a group rather than one workload"
	case addr.IsLoopback():
		return "is loopback, which every host has"
	}
	return ""
}

// ipSANs checks the addresses given to Issue and converts them for x509. A duplicate is refused rather than
// dropped: it is most likely a typo for another address.
func ipSANs(addrs []netip.Addr) ([]net.IP, error) {
	seen := make(map[netip.Addr]bool, len(addrs))
	ips := make([]net.IP, 0, len(addrs))
	for _, a := range addrs {
		if why := ipSANProblem(a); why != "" {
			return nil, fmt.Errorf("IP SAN %s %s", a, why)
		}
		a = a.Unmap()
		if seen[a] {
			return nil, fmt.Errorf("IP SAN %s is given twice", a)
		}
		seen[a] = true
		ips = append(ips, a.AsSlice())
	}
	if len(ips) == 0 {
		return nil, nil // no IPAddresses field at all, as before IP SANs existed
	}
	return ips, nil
}
