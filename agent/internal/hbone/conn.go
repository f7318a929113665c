package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// conn is one HTTP/2 connection over an established TLS connection, either side. It owns two goroutines, the
// read loop and the control loop (writer.go), both started and joined by serve.
//
// Lock order: wmu, then mu, then ctrlMu. The read loop never takes wmu, so it never waits on the network to
// write: what it must send (acks, window updates, resets) goes through the control queue.
type conn struct {
	nc     net.Conn
	server bool
	lim    connLimits
	log    *slog.Logger
	bufs   *bufPool
	fr     *http2.Framer
	peer   spiffeid.ID
	// localID is the identity this server presented (server side).
	localID spiffeid.ID
	// serverName is the SNI of the TLS handshake (server side; "" when none).
	serverName string
	local      netip.AddrPort
	remote     netip.AddrPort

	// Write side, under wmu (writer.go).
	wmu  sync.Mutex
	wbuf []byte
	henc *hpack.Encoder
	hbuf bytes.Buffer
	werr error

	// Control frames waiting for whoever next holds wmu.
	ctrlMu       sync.Mutex
	ctrl         []ctrlFrame
	ctrlSpare    []ctrlFrame
	ctrlOverflow bool
	kick         chan struct{}

	mu          sync.Mutex
	sendCond    sync.Cond // writers waiting for send window; L is &mu
	streams     map[uint32]*Stream
	nextID      uint32 // client: next stream ID to open
	lastPeerID  uint32 // server: highest stream ID the peer opened
	active      int    // client: streams reserved or open until Close; server: handlers running
	sendWindow  int64  // connection send window
	recvWindow  int64  // connection receive window still granted to the peer
	recvUnacked int64  // consumed bytes not yet refunded with WINDOW_UPDATE
	peerWindow  int64  // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrame   int    // the peer's SETTINGS_MAX_FRAME_SIZE
	peerStreams int    // the peer's SETTINGS_MAX_CONCURRENT_STREAMS
	goingAway   bool   // no new streams: GOAWAY sent or received, idle, or closed
	closed      bool
	err         error
	idleSince   time.Time
	pingOut     bool
	pingAt      time.Time
	pingData    [8]byte
	refused     int // server: streams refused for being over the limit
	lingerTimer *time.Timer

	sawSettings bool // the peer's first SETTINGS arrived; read loop only

	ctx      context.Context // cancelled when the connection closes; parent of server stream contexts
	cancel   context.CancelCauseFunc
	done     chan struct{}
	wg       sync.WaitGroup // the control loop
	handlers sync.WaitGroup // server: stream handlers

	onClose  func(*conn)                            // pool bookkeeping; called once, never with mu held
	onStream func(*Stream, *http2.MetaHeadersFrame) // server: a new request (called from the read loop)
}

type connOptions struct {
	server bool
	lim    connLimits
	log    *slog.Logger
	bufs   *bufPool
	peer   spiffeid.ID
	// localID is the identity this server presented, and serverName the SNI the client sent (server side).
	localID    spiffeid.ID
	serverName string
}

func newConn(nc net.Conn, o connOptions) *conn {
	c := &conn{
		nc:          nc,
		server:      o.server,
		lim:         o.lim,
		log:         o.log,
		bufs:        o.bufs,
		peer:        o.peer,
		localID:     o.localID,
		serverName:  o.serverName,
		local:       addrPortOf(nc.LocalAddr()),
		remote:      addrPortOf(nc.RemoteAddr()),
		kick:        make(chan struct{}, 1),
		streams:     make(map[uint32]*Stream),
		nextID:      1,
		sendWindow:  defaultPeerWindow,
		recvWindow:  connWindow,
		peerWindow:  defaultPeerWindow,
		peerFrame:   defaultPeerFrameSize,
		peerStreams: o.lim.maxStreams,
		idleSince:   time.Now(),
		done:        make(chan struct{}),
	}
	c.sendCond.L = &c.mu
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	c.fr = http2.NewFramer((*appendWriter)(&c.wbuf), nc)
	c.fr.SetMaxReadFrameSize(maxFrameSize)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = o.lim.maxHeaderList
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// appendWriter lets the Framer write frames into the connection's pending write buffer.
type appendWriter []byte

func (w *appendWriter) Write(p []byte) (int, error) {
	*w = append(*w, p...)
	return len(p), nil
}

// serve runs the connection until it closes: the control loop in a goroutine, the read loop in the caller's.
func (c *conn) serve() {
	c.wg.Add(1)
	go c.controlLoop()
	err := c.readLoop()
	c.closeWithError(err)
	c.wg.Wait()
	c.handlers.Wait()
}

// closeWithError tears the connection down at once: every stream fails with err, blocked callers wake up.
func (c *conn) closeWithError(err error) {
	if err == nil {
		err = errConnClosed
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.goingAway = true
	if c.err == nil {
		c.err = err // else keep the first cause (an abort's reason)
	}
	err = c.err
	for id, s := range c.streams {
		s.abortLocked(err)
		delete(c.streams, id)
	}
	c.sendCond.Broadcast()
	if c.lingerTimer != nil {
		c.lingerTimer.Stop()
	}
	c.mu.Unlock()
	close(c.done)
	_ = c.nc.Close()
	c.cancel(err)
	if c.onClose != nil {
		c.onClose(c)
	}
}

// closeAfterGoAway ends the connection once its final GOAWAY is written. Closing the socket at once could lose
// the GOAWAY: with the peer's latest frames still unread, the kernel answers with a reset. So our side is
// half-closed (TLS close_notify) and the peer gets goAwayFlushTimeout to read everything and close; its EOF ends
// the read loop, or the timer ends the connection.
func (c *conn) closeAfterGoAway() {
	c.mu.Lock()
	if c.closed || c.lingerTimer != nil {
		c.mu.Unlock()
		return
	}
	c.lingerTimer = time.AfterFunc(goAwayFlushTimeout, func() { c.closeWithError(errGoAwaySent) })
	c.mu.Unlock()
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite() // writes the close_notify alert: never under mu
	}
}

// goAway stops new streams and tells the peer so (GOAWAY NO_ERROR with the last stream we process); the
// connection closes once its last stream is done.
func (c *conn) goAway() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goingAway {
		if c.active == 0 && !c.closed {
			c.queueCtrl(ctrlFrame{kind: ctrlGoAway, val: uint32(http2.ErrCodeNo), stream: c.lastPeerID, close: true})
		}
		return
	}
	c.goingAway = true
	c.queueCtrl(ctrlFrame{kind: ctrlGoAway, val: uint32(http2.ErrCodeNo), stream: c.lastPeerID, close: c.active == 0})
}

// abort sends GOAWAY with code and closes the connection once it is written, or after goAwayFlushTimeout if the
// network does not take it. It returns when the connection is closed.
func (c *conn) abort(code http2.ErrCode, err error) {
	c.mu.Lock()
	c.goingAway = true
	if c.err == nil {
		c.err = err
	}
	closed := c.closed
	if !closed {
		c.queueCtrl(ctrlFrame{kind: ctrlGoAway, val: uint32(code), stream: c.lastPeerID, close: true})
	}
	c.mu.Unlock()
	if closed {
		return
	}
	t := time.NewTimer(goAwayFlushTimeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.closeWithError(err)
	}
}

// tryReserve takes a stream slot on a client connection if it accepts another stream under limit.
func (c *conn) tryReserve(limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goingAway || c.closed || c.nextID > defaultMaxStreamID {
		return false
	}
	limit = min(limit, c.peerStreams)
	if c.active >= limit {
		return false
	}
	c.active++
	return true
}

// releaseSlot gives back a stream slot (client) or ends a handler (server).
func (c *conn) releaseSlot() {
	c.mu.Lock()
	c.active--
	if c.active == 0 {
		c.idleSince = time.Now()
		if c.goingAway && !c.closed {
			c.queueCtrl(ctrlFrame{kind: ctrlGoAway, val: uint32(http2.ErrCodeNo), stream: c.lastPeerID, close: true})
		}
	}
	c.mu.Unlock()
}

// forgetLocked drops a stream from the map once HTTP/2 considers it closed; the Stream lives on until Close.
func (c *conn) forgetLocked(s *Stream) {
	if s.reset || (s.sendEnded && s.recvEnded) {
		delete(c.streams, s.id)
	}
}

// idleStreamLocked reports whether id names a stream that was never opened.
func (c *conn) idleStreamLocked(id uint32) bool {
	if c.server {
		return id%2 == 0 || id > c.lastPeerID
	}
	return id%2 == 0 || id >= c.nextID
}

func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case nil:
		return ap
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// peerID returns the SPIFFE ID in the URI SAN of the peer's leaf certificate. The TLS configuration must have
// verified the chain; hbone only reads the identity.
func peerID(cs tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errNoPeerCert
	}
	leaf := cs.PeerCertificates[0]
	var id spiffeid.ID
	for _, u := range leaf.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		if !id.IsZero() {
			return spiffeid.ID{}, errManySPIFFE
		}
		parsed, err := spiffeid.FromURI(u)
		if err != nil {
			return spiffeid.ID{}, err
		}
		id = parsed
	}
	if id.IsZero() {
		return spiffeid.ID{}, errNoSPIFFE
	}
	return id, nil
}
