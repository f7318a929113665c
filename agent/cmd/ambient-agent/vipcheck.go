package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"strings"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
)

// checkVIPRoutes: a connection to a service VIP is captured only after the
// kernel found a route for it; a VIP no route covers fails with "network is
// unreachable" before the agent ever sees it.
func checkVIPRoutes(d *admin.Dump) check {
	c := check{Name: "routes to service VIPs"}
	routes, err := ipv4Routes("/proc/net/route")
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	var missing []string
	n := 0
	for _, s := range d.Services {
		for _, a := range s.Addresses {
			if !a.Is4() {
				continue
			}
			n++
			if !covered(routes, a) {
				missing = append(missing, a.String())
			}
		}
	}
	switch {
	case len(missing) > 0:
		c.Detail = "no route for " + strings.Join(missing, ", ")
		c.Fix = "add a default route, or: ip route add 240.240.0.0/16 dev <interface> (see docs/services.md)"
	case n == 0:
		c.OK, c.Detail = true, "no IPv4 service VIP"
	default:
		c.OK, c.Detail = true, fmt.Sprintf("%d VIP(s) routable", n)
	}
	return c
}

func covered(routes []netip.Prefix, a netip.Addr) bool {
	for _, p := range routes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ipv4Routes reads the destinations of the main IPv4 routing table.
func ipv4Routes(path string) ([]netip.Prefix, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []netip.Prefix
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 {
			continue
		}
		dst, err1 := hex.DecodeString(fields[1])
		mask, err2 := hex.DecodeString(fields[7])
		if err1 != nil || err2 != nil || len(dst) != 4 || len(mask) != 4 {
			continue
		}
		// /proc/net/route prints addresses in host (little-endian) byte order.
		d := binary.LittleEndian.Uint32(dst)
		m := binary.LittleEndian.Uint32(mask)
		ones := bits.OnesCount32(m)
		addr := netip.AddrFrom4([4]byte{byte(d >> 24), byte(d >> 16), byte(d >> 8), byte(d)})
		out = append(out, netip.PrefixFrom(addr, ones))
	}
	return out, sc.Err()
}
