package hbone

import (
	"bytes"
	"crypto/tls"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawServerConn is one connection of a minimal HTTP/2 server written on the Framer independently of the package,
// so that client tests can see exactly what the Pool sends and answer what our Server never would.
type rawServerConn struct {
	nc          net.Conn
	fr          *http2.Framer
	hbuf        bytes.Buffer
	enc         *hpack.Encoder
	answerPings bool
}

// newRawServer serves TLS (with the harness CA's server certificate) and runs handle on each connection once the
// preface was read and SETTINGS sent. It returns the server as a tunnel target, and pool makes a Pool for it.
func newRawServer(t testing.TB, ca *testCA, handle func(*rawServerConn)) rawTarget {
	t.Helper()
	cfg := ca.serverTLS(ca.leaf(t, serverID))
	addr := tcpServer(t, func(c *net.TCPConn) {
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		if err := readPreface(tc); err != nil {
			return
		}
		rs := &rawServerConn{nc: tc, fr: http2.NewFramer(tc, tc), answerPings: true}
		rs.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		rs.enc = hpack.NewEncoder(&rs.hbuf)
		if err := rs.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100}); err != nil {
			return
		}
		handle(rs)
	})
	cert := ca.leaf(t, clientID)
	return rawTarget{
		target: target{Tunnel{Source: spiffeid.RequireFromString(clientID), Expected: []spiffeid.ID{spiffeid.RequireFromString(serverID)}, Gateway: addr}},
		tls:    func(*Tunnel) (*tls.Config, error) { return ca.clientTLS(cert, serverID), nil },
	}
}

type rawTarget struct {
	target
	tls func(*Tunnel) (*tls.Config, error)
}

// pool is a Pool configured by cfg that presents the client certificate to the raw server.
func (r rawTarget) pool(cfg PoolConfig) *Pool {
	cfg.TLS = r.tls
	return NewPool(cfg)
}

// next returns the next frame that is not a SETTINGS or (when answered) a PING.
func (rs *rawServerConn) next() (http2.Frame, error) {
	for {
		f, err := rs.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = rs.fr.WriteSettingsAck()
			}
			continue
		case *http2.PingFrame:
			if rs.answerPings {
				if !f.IsAck() {
					_ = rs.fr.WritePing(true, f.Data)
				}
				continue
			}
		}
		return f, nil
	}
}

// nextRequest returns the next request's header frame.
func (rs *rawServerConn) nextRequest() (*http2.MetaHeadersFrame, error) {
	for {
		f, err := rs.next()
		if err != nil {
			return nil, err
		}
		if mh, ok := f.(*http2.MetaHeadersFrame); ok {
			return mh, nil
		}
	}
}

func (rs *rawServerConn) respond(id uint32, status int, end bool) error {
	rs.hbuf.Reset()
	_ = rs.enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	return rs.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rs.hbuf.Bytes(), EndHeaders: true, EndStream: end})
}

// drain reads and drops frames until the connection ends.
func (rs *rawServerConn) drain() {
	for {
		if _, err := rs.next(); err != nil {
			return
		}
	}
}

// fieldRecorder keeps the header lists a raw server received.
type fieldRecorder struct {
	mu   sync.Mutex
	reqs [][]hpack.HeaderField
}

func (fr *fieldRecorder) add(f []hpack.HeaderField) {
	fr.mu.Lock()
	fr.reqs = append(fr.reqs, f)
	fr.mu.Unlock()
}
