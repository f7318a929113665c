package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The getsockopt names of the original destination of a NATed connection
// (linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h); x/sys/unix has
// neither.
const (
	soOriginalDst     = 80 // SOL_IP
	ip6tSoOriginalDst = 80 // SOL_IPV6
)

// OriginalDst returns the destination a redirected connection was opened to,
// before nftables rewrote it: SO_ORIGINAL_DST for IPv4 (also for IPv4 clients of a
// dual-stack listener), IP6T_SO_ORIGINAL_DST for IPv6. A connection that was not
// redirected yields its own local address, so callers compare the two to spot
// clients that connected to the agent's port directly. IPv4 results are plain
// IPv4, never IPv4-mapped.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok || local == nil {
		return netip.AddrPort{}, errors.New("capture: original destination: connection has no local address")
	}
	v4 := local.IP.To4() != nil
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("capture: original destination: %w", err)
	}
	var dst netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) { dst, serr = originalDst(fd, v4) })
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("capture: original destination of %s: %w", local, err)
	}
	return dst, nil
}

// originalDst reads the sockaddr straight into a value on the stack: no
// allocation per connection.
func originalDst(fd uintptr, v4 bool) (netip.AddrPort, error) {
	if v4 {
		var sa unix.RawSockaddrInet4
		if err := getsockopt(fd, unix.SOL_IP, soOriginalDst, unsafe.Pointer(&sa), unix.SizeofSockaddrInet4); err != nil {
			return netip.AddrPort{}, err
		}
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), networkPort(sa.Port)), nil
	}
	var sa unix.RawSockaddrInet6
	if err := getsockopt(fd, unix.SOL_IPV6, ip6tSoOriginalDst, unsafe.Pointer(&sa), unix.SizeofSockaddrInet6); err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), networkPort(sa.Port)), nil
}

func getsockopt(fd uintptr, level, name int, p unsafe.Pointer, size uint32) error {
	l := size
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), uintptr(name), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return fmt.Errorf("getsockopt: %w", errno)
	}
	return nil
}

// networkPort reads a sockaddr port, which is in network byte order in memory.
func networkPort(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return binary.BigEndian.Uint16(b[:])
}
