package hbone

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawClient is a minimal HTTP/2 client written on the Framer independently of the package's own client, so
// that tests can send what our Pool never would (bad methods, odd headers, resets) and see the server's frames.
type rawClient struct {
	t    testing.TB
	nc   net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	next uint32
}

func dialRaw(t testing.TB, h *harness) *rawClient {
	t.Helper()
	cfg := h.ca.clientTLS(h.ca.leaf(t, clientID), serverID)
	nc, err := tls.Dial("tcp", h.srvAddr.String(), cfg)
	if err != nil {
		t.Fatalf("raw dial: %v", err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return newRawClient(t, nc)
}

func newRawClient(t testing.TB, nc net.Conn) *rawClient {
	rc := &rawClient{t: t, nc: nc, next: 1}
	rc.fr = http2.NewFramer(nc, nc)
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.enc = hpack.NewEncoder(&rc.hbuf)
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return rc
}

// request sends HEADERS with the given name/value pairs (pseudo-headers first, as written) on a new stream.
func (rc *rawClient) request(kv ...string) uint32 {
	rc.t.Helper()
	rc.hbuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		_ = rc.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	id := rc.next
	rc.next += 2
	block := rc.hbuf.Bytes()
	first := block
	if len(first) > rawMaxFrame {
		first = first[:rawMaxFrame]
	}
	block = block[len(first):]
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndHeaders: len(block) == 0}); err != nil {
		rc.t.Fatal(err)
	}
	for len(block) > 0 {
		frag := block[:min(len(block), rawMaxFrame)]
		block = block[len(frag):]
		if err := rc.fr.WriteContinuation(id, len(block) == 0, frag); err != nil {
			rc.t.Fatal(err)
		}
	}
	return id
}

func (rc *rawClient) connect(authority string, extra ...string) uint32 {
	return rc.request(append([]string{":method", "CONNECT", ":authority", authority}, extra...)...)
}

// rawMaxFrame is the largest frame the raw client writes: the server under test advertises 1 MiB.
const rawMaxFrame = 1 << 20

// errGoneAway is what awaitStatus returns when the server ends the connection.
var errGoneAway = errors.New("connection ended")

// awaitStatus reads frames until the response to stream id, answering SETTINGS and PINGs on the way.
func (rc *rawClient) awaitStatus(id uint32) (status int, endStream bool, err error) {
	_ = rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			return 0, false, fmt.Errorf("%w: %v", errGoneAway, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = rc.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = rc.fr.WritePing(true, f.Data)
			}
		case *http2.GoAwayFrame:
			return 0, false, fmt.Errorf("%w: GOAWAY %v", errGoneAway, f.ErrCode)
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return 0, false, fmt.Errorf("stream reset: %v", f.ErrCode)
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				st, err := strconv.Atoi(f.PseudoValue("status"))
				return st, f.StreamEnded(), err
			}
		}
	}
}

// awaitFrame reads frames until match returns true for one, answering SETTINGS and PINGs on the way.
func (rc *rawClient) awaitFrame(match func(http2.Frame) bool) (http2.Frame, error) {
	_ = rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			_ = rc.fr.WriteSettingsAck()
		}
		if match(f) {
			return f, nil
		}
	}
}
