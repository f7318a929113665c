package hbone

import (
	"time"

	"golang.org/x/net/http2"
)

// HTTP/2 settings, as ztunnel uses them (spec/hbone.md "HTTP/2 settings").
const (
	streamWindow         = 4 << 20  // initial stream receive window we advertise
	connWindow           = 16 << 20 // connection receive window we open up to
	maxFrameSize         = 1 << 20  // largest frame we accept
	serverMaxHeaderList  = 64 << 10 // SETTINGS_MAX_HEADER_LIST_SIZE, server side
	clientMaxHeaderList  = 16 << 10 // SETTINGS_MAX_HEADER_LIST_SIZE, client side
	serverMaxStreams     = 200      // SETTINGS_MAX_CONCURRENT_STREAMS the server advertises
	clientStreamsPerConn = 100      // a client opens another connection beyond this many streams

	defaultPeerWindow    = 65535 // RFC 9113 initial windows until the peer's SETTINGS say otherwise
	defaultPeerFrameSize = 16384
	defaultMaxStreamID   = 1<<31 - 1

	// windowUpdateDivisor batches WINDOW_UPDATEs: a stream (connection) refunds the peer once a quarter of its
	// window has been consumed, so a sender always has at least three quarters of the window in flight.
	windowUpdateDivisor = 4

	// tlsRecord is the largest TLS plaintext record; DATA frames are written so that records stay full.
	tlsRecord = 16384
	// chunkSize is the size of the pooled buffers DATA payloads are read into and copied through.
	chunkSize = 64 << 10
	// maxControlQueue bounds control frames waiting to be written (PING and SETTINGS acks, resets, ...): a peer
	// that floods us with frames that need an answer while not reading our answers is cut off.
	maxControlQueue = 4096
)

// Timeouts and intervals (ztunnel's, except where said).
const (
	defaultHandshakeTimeout  = 10 * time.Second
	defaultHeaderTimeout     = 10 * time.Second // preface and first SETTINGS after the handshake
	defaultConnectTimeout    = 10 * time.Second // TCP connect + TLS on the client
	defaultResponseTimeout   = 15 * time.Second // client waits this long for the CONNECT answer
	defaultKeepAliveInterval = 10 * time.Second
	defaultKeepAliveTimeout  = 20 * time.Second
	defaultClientIdle        = 5 * time.Minute
	defaultServerIdle        = 10 * time.Minute // longer than clients keep idle connections
	tcpKeepAlive             = 180 * time.Second
	tcpKeepAliveCount        = 9
)

// goAwayFlushTimeout is how long a connection whose final GOAWAY is written waits for its peer to close
// (closeAfterGoAway). A variable for FuzzServerFrames alone, whose every aborted input would wait it out.
var goAwayFlushTimeout = time.Second

// connLimits are the per-connection parameters both sides share.
type connLimits struct {
	keepAliveInterval time.Duration
	keepAliveTimeout  time.Duration
	idleTimeout       time.Duration
	maxHeaderList     uint32
	maxStreams        int // server: concurrent streams accepted; client: streams opened per connection
}

func (l connLimits) settings(server bool) []http2.Setting {
	s := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		{ID: http2.SettingMaxFrameSize, Val: maxFrameSize},
		{ID: http2.SettingMaxHeaderListSize, Val: l.maxHeaderList},
	}
	if server {
		return append(s, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: uint32(l.maxStreams)})
	}
	return append(s, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
}

// tick is how often a connection's control loop wakes to send PINGs and check timeouts.
func (l connLimits) tick() time.Duration {
	t := l.keepAliveInterval
	if l.keepAliveTimeout/4 < t {
		t = l.keepAliveTimeout / 4 // an unanswered PING is noticed within a quarter of the timeout
	}
	if l.idleTimeout > 0 && l.idleTimeout/4 < t {
		t = l.idleTimeout / 4
	}
	if t < time.Millisecond {
		t = time.Millisecond
	}
	return t
}
