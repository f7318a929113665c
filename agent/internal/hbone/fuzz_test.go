package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzServerFrames feeds arbitrary bytes, after the client preface, to the server's HTTP/2 side (TLS is not
// involved: the bytes are what the TLS layer would hand over). Whatever they are, the server must not panic,
// must finish once the client goes away, and must leave no goroutine running. Targets on port 1 are allowed
// (to an in-memory echo), on port 2 denied, others unknown, so requests reach every answer path.
//
// The seed corpus in testdata/fuzz/FuzzServerFrames holds well-formed conversations (a tunnel with data and
// half-close, resets, pings, window updates, CONTINUATION, padding, GOAWAY) to start from.
func FuzzServerFrames(f *testing.F) {
	// An input the server aborts waits for the peer to close after the GOAWAY; here the client has closed
	// already, so the wait is the whole timeout: a second an input, which would leave nothing to fuzz with.
	flush := goAwayFlushTimeout
	goAwayFlushTimeout = 5 * time.Millisecond
	f.Cleanup(func() { goAwayFlushTimeout = flush })
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	var upstreams sync.WaitGroup
	srv, err := NewServer(ServerConfig{
		Certificate:   staticCertificate(serverID, &tls.Config{}),
		HeaderTimeout: 2 * time.Second,
		Handler: &testHandler{connectTimeout: 10 * time.Second, authorize: func(_ context.Context, req *Request) decision {
			switch req.Target.Port {
			case 1:
				d := allow(req.Target.Addr)
				d.dial = func(context.Context, netip.AddrPort) (net.Conn, error) {
					a, b := net.Pipe()
					upstreams.Add(1)
					go func() {
						defer upstreams.Done()
						_, _ = io.Copy(b, b)
						_ = b.Close()
					}()
					return a, nil
				}
				return d
			case 2:
				return deny(FlagDenied, nil)
			}
			return deny(FlagUnknownWorkload, nil)
		}},
	})
	if err != nil {
		f.Fatal(err)
	}
	peer := spiffeid.RequireFromString(clientID)
	f.Fuzz(func(t *testing.T, frames []byte) {
		client, server := net.Pipe()
		served := make(chan struct{})
		go func() {
			defer close(served)
			srv.serveH2(server, server, &TunnelInfo{Direction: Inbound, Peer: peer}, spiffeid.ID{}, func() {})
		}()
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			_, _ = io.Copy(io.Discard, client)
		}()
		_ = client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = client.Write(append([]byte(http2.ClientPreface), frames...))
		_ = client.Close()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Fatal("server still running 10 s after the client went away")
		}
		<-drained
		upstreams.Wait()
	})
}

// fuzzSeeds builds well-formed client conversations.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	build := func(write func(fr *http2.Framer, hdrs func(id uint32, end bool, kv ...string))) {
		var buf bytes.Buffer
		fr := http2.NewFramer(&buf, nil)
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		hdrs := func(id uint32, end bool, kv ...string) {
			hb.Reset()
			for i := 0; i+1 < len(kv); i += 2 {
				_ = enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
			}
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: end})
		}
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		write(fr, hdrs)
		seeds = append(seeds, buf.Bytes())
	}
	connect := func(authority string) []string {
		return []string{":method", "CONNECT", ":authority", authority, "baggage", "k8s.namespace.name=default",
			"forwarded", `for="10.0.0.9:4000"`, "traceparent", "00-0123456789abcdef0123456789abcdef-0123456789abcdef-00"}
	}
	// A tunnel that carries data both ways and half-closes.
	build(func(fr *http2.Framer, hdrs func(uint32, bool, ...string)) {
		hdrs(1, false, connect("127.0.0.1:1")...)
		_ = fr.WriteData(1, false, []byte("hello"))
		_ = fr.WriteWindowUpdate(1, 1000)
		_ = fr.WriteWindowUpdate(0, 1000)
		_ = fr.WriteData(1, true, []byte("bye"))
	})
	// Allowed, denied, unknown and illegal targets on one connection, then a reset and a GOAWAY.
	build(func(fr *http2.Framer, hdrs func(uint32, bool, ...string)) {
		hdrs(1, false, connect("127.0.0.1:1")...)
		hdrs(3, false, connect("127.0.0.1:2")...)
		hdrs(5, true, connect("[fd00::1]:3")...)
		hdrs(7, false, connect("127.0.0.1:15008")...)
		_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
		_ = fr.WritePing(false, [8]byte{1, 2, 3})
		_ = fr.WriteGoAway(0, http2.ErrCodeNo, []byte("bye"))
	})
	// Bad requests: GET, a hostname authority, CONNECT with :path.
	build(func(fr *http2.Framer, hdrs func(uint32, bool, ...string)) {
		hdrs(1, false, ":method", "GET", ":authority", "127.0.0.1:1", ":scheme", "https", ":path", "/")
		hdrs(3, false, connect("echo.default.svc:1")...)
		hdrs(5, false, ":method", "CONNECT", ":authority", "127.0.0.1:1", ":path", "/")
	})
	// Padded DATA, a CONTINUATION, PRIORITY and an unknown frame type.
	build(func(fr *http2.Framer, hdrs func(uint32, bool, ...string)) {
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for i := 0; i+1 < len(connect("127.0.0.1:1")); i += 2 {
			kv := connect("127.0.0.1:1")
			_ = enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		block := hb.Bytes()
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:4], EndHeaders: false})
		_ = fr.WriteContinuation(1, true, block[4:])
		_ = fr.WriteDataPadded(1, false, []byte("padded"), make([]byte, 7))
		_ = fr.WritePriority(1, http2.PriorityParam{Weight: 7})
		_ = fr.WriteRawFrame(0x42, 0, 0, []byte("unknown"))
		_ = fr.WriteData(1, true, nil)
	})
	// Protocol errors: DATA on stream 0, a zero window increment, SETTINGS with a bad frame size.
	build(func(fr *http2.Framer, hdrs func(uint32, bool, ...string)) {
		fr.AllowIllegalWrites = true
		hdrs(1, false, connect("127.0.0.1:1")...)
		_ = fr.WriteWindowUpdate(1, 0)
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 10})
		_ = fr.WriteData(0, false, []byte("x"))
	})
	return seeds
}
