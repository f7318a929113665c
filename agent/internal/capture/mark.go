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

// TransparentControl is MarkControl for a socket that may bind a client's address, which is not one of this
// host's (IP_TRANSPARENT, or IPV6_TRANSPARENT for tcp6): the agent connects to a local application from the address
// of the client it relays, so that the application sees the real client. The replies come back through
// ReturnPath. It needs CAP_NET_ADMIN, as the mark does.
func TransparentControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	marked := MarkControl(mark)
	return func(network, address string, c syscall.RawConn) error {
		if err := marked(network, address, c); err != nil {
			return err
		}
		level, opt := unix.SOL_IP, unix.IP_TRANSPARENT
		if network == "tcp6" {
			level, opt = unix.SOL_IPV6, unix.IPV6_TRANSPARENT
		}
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, 1) }); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("capture: transparent %s socket for %s: %w", network, address, serr)
		}
		return nil
	}
}

// ListenMarked listens like net.Listen on a socket that carries mark, set before
// it binds. The listeners that receive redirected connections must carry the
// agent's mark when the table guards them (nft.Spec.GuardListeners): the guard
// resets every redirected connection that reaches an unmarked socket, so that a
// local user who binds the agent's port while the agent is down gets none.
// keepAlive false accepts connections without TCP keepalive (Go's default sets
// it, four setsockopt calls per connection): for the ports only local
// applications reach, where it protects nothing.
func ListenMarked(network, address string, mark uint32, keepAlive bool) (net.Listener, error) {
	lc := net.ListenConfig{Control: MarkControl(mark)}
	if !keepAlive {
		lc.KeepAlive = -1
	}
	return lc.Listen(context.Background(), network, address)
}
