package discovery

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// testTransport wraps memberlist's transport: it counts the bytes this node sends (packets and streams, after
// encryption, without IP/UDP/TCP headers) and can cut the node off the network, which to the others looks like a
// crash or a partition.
type testTransport struct {
	memberlist.NodeAwareTransport
	cut         atomic.Bool
	packetBytes atomic.Int64
	streamBytes atomic.Int64

	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

func wrapTransport(inner memberlist.NodeAwareTransport) *testTransport {
	t := &testTransport{
		NodeAwareTransport: inner,
		packets:            make(chan *memberlist.Packet),
		streams:            make(chan net.Conn),
		done:               make(chan struct{}),
	}
	t.wg.Go(t.forwardPackets)
	t.wg.Go(t.forwardStreams)
	return t
}

var errCut = errors.New("test transport: cut off")

func (t *testTransport) forwardPackets() {
	for {
		select {
		case <-t.done:
			return
		case p := <-t.NodeAwareTransport.PacketCh():
			if t.cut.Load() {
				continue
			}
			select {
			case t.packets <- p:
			case <-t.done:
				return
			}
		}
	}
}

func (t *testTransport) forwardStreams() {
	for {
		select {
		case <-t.done:
			return
		case c := <-t.NodeAwareTransport.StreamCh():
			if t.cut.Load() {
				_ = c.Close()
				continue
			}
			select {
			case t.streams <- &countingConn{Conn: c, n: &t.streamBytes}:
			case <-t.done:
				_ = c.Close()
				return
			}
		}
	}
}

func (t *testTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *testTransport) StreamCh() <-chan net.Conn           { return t.streams }

func (t *testTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *testTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if t.cut.Load() {
		return time.Now(), nil // lost on the way
	}
	t.packetBytes.Add(int64(len(b)))
	return t.NodeAwareTransport.WriteToAddress(b, addr)
}

func (t *testTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *testTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.cut.Load() {
		return nil, errCut
	}
	c, err := t.NodeAwareTransport.DialAddressTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &t.streamBytes}, nil
}

func (t *testTransport) Shutdown() error {
	err := t.NodeAwareTransport.Shutdown()
	t.once.Do(func() { close(t.done) })
	t.wg.Wait()
	return err
}

func (t *testTransport) sent() int64 { return t.packetBytes.Load() + t.streamBytes.Load() }

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(int64(n))
	return n, err
}
