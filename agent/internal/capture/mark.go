package capture

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// MarkControl returns a Control function for net.Dialer and net.ListenConfig that
// sets SO_MARK to mark on the socket before it connects or binds. The agent's own
// connections carry it so that outbound capture lets them through instead of
// redirecting them back into the agent. Setting a mark needs CAP_NET_ADMIN.
func MarkControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			return fmt.Errorf("capture: set mark 0x%x on %s socket for %s: %w", mark, network, address, err)
		}
		return nil
	}
}
