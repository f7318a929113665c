package hbone

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Authority is a parsed CONNECT :authority: an IP address and port, or (double HBONE) a hostname and port.
type Authority struct {
	// Addr is set when the host is an IP address (IPv4-mapped IPv6 is unmapped to IPv4).
	Addr netip.AddrPort
	// Host is the lower-cased hostname when the host is not an IP address.
	Host string
	// Port is always set (1-65535).
	Port uint16
}

// IsHostname reports whether the authority names a host rather than an address.
func (a Authority) IsHostname() bool { return a.Host != "" }

// String formats the authority as it goes on the wire: ip:port, [ipv6]:port or host:port.
func (a Authority) String() string {
	if a.Host != "" {
		return a.Host + ":" + strconv.Itoa(int(a.Port))
	}
	return a.Addr.String()
}

var errEmptyAuthority = errors.New("empty authority")

// ParseAuthority parses a CONNECT :authority strictly: "ip:port", "[ipv6]:port" or "hostname:port"; no userinfo,
// no zone, no leading zeros or signs in the port, port 0 refused.
func ParseAuthority(s string) (Authority, error) {
	if s == "" {
		return Authority{}, errEmptyAuthority
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Authority{}, fmt.Errorf("authority %q: missing port", s)
	}
	host, portStr := s[:i], s[i+1:]
	port, err := parsePort(portStr)
	if err != nil {
		return Authority{}, fmt.Errorf("authority %q: %w", s, err)
	}
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return Authority{}, fmt.Errorf("authority %q: unterminated IPv6 literal", s)
		}
		ip, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return Authority{}, fmt.Errorf("authority %q: bad IPv6 literal", s)
		}
		return Authority{Addr: netip.AddrPortFrom(ip.Unmap(), port), Port: port}, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() {
		return Authority{Addr: netip.AddrPortFrom(ip, port), Port: port}, nil
	}
	if err := checkHostname(host); err != nil {
		return Authority{}, fmt.Errorf("authority %q: %w", s, err)
	}
	return Authority{Host: strings.ToLower(host), Port: port}, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || len(s) > 5 || s[0] == '0' {
		return 0, fmt.Errorf("bad port %q", s)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad port %q", s)
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, fmt.Errorf("port %q out of range", s)
	}
	return uint16(n), nil
}

// checkHostname accepts DNS names made of letters, digits and hyphens (RFC 1123), with an optional final dot
// refused, and a last label that is not all digits (so "1.2.3.256" or "01.2.3.4" are not taken for names).
func checkHostname(h string) error {
	if h == "" || len(h) > 253 {
		return fmt.Errorf("bad host %q", h)
	}
	allDigits := false
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("bad host %q", h)
		}
		allDigits = true
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-':
				allDigits = false
			default:
				return fmt.Errorf("bad host %q", h)
			}
		}
	}
	if allDigits {
		return fmt.Errorf("bad host %q: numeric but not an IPv4 address", h)
	}
	return nil
}
