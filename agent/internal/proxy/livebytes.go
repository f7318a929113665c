package proxy

import (
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

// tcpProgress reports what a client's TCP connection has carried so far, from
// the kernel (TCP_INFO: bytes received from the client, bytes it acknowledged),
// for telemetry.Conn.Live. It is read at scrape time only, so splice keeps
// copying TCP to TCP with no count in the data path. Once the socket is gone
// it reports the last values it read.
func tcpProgress(c *net.TCPConn) func() (sent, received int64) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var (
		mu   sync.Mutex
		last [2]int64
	)
	return func() (int64, int64) {
		mu.Lock()
		defer mu.Unlock()
		_ = raw.Control(func(fd uintptr) {
			if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				last = [2]int64{int64(info.Bytes_received), int64(info.Bytes_acked)}
			}
		})
		return last[0], last[1]
	}
}

// live makes rec count c's bytes as they are carried (the client's side of
// the connection: sent = from the client).
func live(rec interface {
	Live(func() (int64, int64))
}, c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		if p := tcpProgress(tc); p != nil {
			rec.Live(p)
		}
	}
}
