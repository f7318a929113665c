package capture

import (
	"context"
	"fmt"
	"net"
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

// ListenMarked listens like net.Listen on a socket that carries mark, set before
// it binds. The listeners that receive redirected connections must carry the
// agent's mark when the table guards them (nft.Spec.GuardListeners): the guard
// resets every redirected connection that reaches an unmarked socket, so that a
// local user who binds the agent's port while the agent is down gets none.
func ListenMarked(network, address string, mark uint32) (net.Listener, error) {
	lc := net.ListenConfig{Control: MarkControl(mark)}
	return lc.Listen(context.Background(), network, address)
}
