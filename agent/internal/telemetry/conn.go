package telemetry

import (
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// ConnInfo describes one connection for the access log, beyond its labels.
type ConnInfo struct {
	Direction string // "inbound", "inbound_plaintext", "outbound"
	Src, Dst  netip.AddrPort
	Route     string // how it was carried: hbone, plaintext, passthrough, ...
}

// Conn records the telemetry of one connection: it is counted as opened when
// created and, at Close, as closed (and failed, for any flag but "-") with its
// bytes, and written as one access-log line.
type Conn struct {
	m     *Metrics
	log   *slog.Logger
	info  ConnInfo
	set   *labelSet   // the labels it was opened with, shared with the connections that have the same
	own   *ConnLabels // once Labels was called: the labels as the caller completed them, which Close counts under
	start time.Time

	// mu orders a scrape's flush against Close; nothing on the data path takes it.
	mu       sync.Mutex
	done     bool
	progress func() (sent, received int64)
	counted  [2]int64 // sent, received already added to the byte counters
}

// Open starts recording a connection.
func (m *Metrics) Open(log *slog.Logger, info ConnInfo, labels ConnLabels) *Conn {
	set := m.labelSet(labels)
	set.child(&set.opened, m.opened).Inc()
	set.open.Inc()
	return &Conn{m: m, log: log, info: info, set: set, start: time.Now()}
}

// labels are the connection's labels now.
func (c *Conn) labels() *ConnLabels {
	if c.own != nil {
		return c.own
	}
	return &c.set.labels
}

// current is the label set of the connection's labels now.
func (c *Conn) current() *labelSet {
	if c.own == nil || *c.own == c.set.labels {
		return c.set
	}
	return c.m.labelSet(*c.own)
}

// Live makes the connection's bytes count as they are carried, not only at
// Close: progress reports what has gone client to server (sent) and back
// (received) so far, and every scrape adds what is new. It costs nothing per
// message: progress is read at scrape time only (a socket's TCP_INFO, a
// stream's counters).
func (c *Conn) Live(progress func() (sent, received int64)) {
	c.mu.Lock()
	c.progress = progress
	c.mu.Unlock()
	c.m.live.Store(c, struct{}{})
}

// countBytes adds what the connection carried beyond what was counted. The
// byte counters carry response_flags "-": bytes are counted as they are
// copied, before the connection's outcome is known. Call with c.mu held.
func (c *Conn) countBytes(sent, received int64) {
	set := c.current()
	// Istio's byte counters are from the reporter's point of view of the
	// request: received = client to server, sent = server to client.
	if d := sent - c.counted[0]; d > 0 {
		set.child(&set.received, c.m.received).Add(float64(d))
		c.counted[0] = sent
	}
	if d := received - c.counted[1]; d > 0 {
		set.child(&set.sent, c.m.sent).Add(float64(d))
		c.counted[1] = received
	}
}

// flush counts the bytes of a live connection so far.
func (c *Conn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done && c.progress != nil {
		c.countBytes(c.progress())
	}
}

// Labels lets the caller complete labels learned after Open (e.g. the peer
// identity once the handshake is done): Close and the byte counters use them,
// the opened counter keeps those of Open. Call before Live and Close. The
// connection then holds its own copy of the labels.
func (c *Conn) Labels() *ConnLabels {
	if c.own == nil {
		own := c.set.labels
		c.own = &own
	}
	return c.own
}

// Close records the end of the connection. sent is what went from the client
// to the server, received the way back. Only the first call counts.
func (c *Conn) Close(sent, received int64, flag Flag, reason string) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	c.done = true
	c.countBytes(sent, received)
	c.mu.Unlock()
	if c.progress != nil {
		c.m.live.Delete(c)
	}
	if flag == "" {
		flag = FlagNone
	}
	set := c.current()
	if flag == FlagNone {
		set.child(&set.closed, c.m.closed).Inc()
	} else {
		v := set.labels.values(flag)
		c.m.closed.WithLabelValues(v...).Inc()
		c.m.failed.WithLabelValues(v...).Inc()
	}
	set.open.Dec()
	l := &set.labels
	level := slog.LevelInfo
	if flag != FlagNone {
		level = slog.LevelWarn
	}
	c.log.Log(nil, level, "access",
		"direction", c.info.Direction,
		"src", c.info.Src.String(),
		"dst", c.info.Dst.String(),
		"route", c.info.Route,
		"src_workload", orUnknown(l.SourceWorkload),
		"src_identity", orUnknown(l.SourcePrincipal),
		"dst_workload", orUnknown(l.DestinationWorkload),
		"dst_identity", orUnknown(l.DestinationPrincipal),
		"dst_service", orUnknown(l.DestinationService),
		"bytes_sent", sent,
		"bytes_received", received,
		"duration", time.Since(c.start).Round(time.Microsecond).String(),
		"response_flags", string(flag),
		"reason", reason,
	)
}

func orUnknown(s string) string {
	if s == "" {
		return Unknown
	}
	return s
}

// LiveConn is one open connection as `ambient-agent connections` shows it.
type LiveConn struct {
	Direction   string         `json:"direction"`
	Src         netip.AddrPort `json:"src"`
	Dst         netip.AddrPort `json:"dst"`
	Route       string         `json:"route"`
	SrcWorkload string         `json:"srcWorkload,omitempty"`
	SrcIdentity string         `json:"srcIdentity,omitempty"`
	DstWorkload string         `json:"dstWorkload,omitempty"`
	DstIdentity string         `json:"dstIdentity,omitempty"`
	DstService  string         `json:"dstService,omitempty"`
	Since       time.Time      `json:"since"`
	// BytesSent went from the client to the server so far, BytesReceived back.
	BytesSent     int64 `json:"bytesSent"`
	BytesReceived int64 `json:"bytesReceived"`
}

// LiveConnections lists the open connections whose bytes are counted as they flow (every proxied TCP
// connection and inbound tunnel), oldest first.
func (m *Metrics) LiveConnections() []LiveConn {
	var out []LiveConn
	m.live.Range(func(k, _ any) bool {
		c := k.(*Conn)
		c.mu.Lock()
		if !c.done {
			l := c.labels()
			lc := LiveConn{Direction: c.info.Direction, Src: c.info.Src, Dst: c.info.Dst, Route: c.info.Route,
				SrcWorkload: l.SourceWorkload, SrcIdentity: l.SourcePrincipal,
				DstWorkload: l.DestinationWorkload, DstIdentity: l.DestinationPrincipal,
				DstService: l.DestinationService, Since: c.start}
			if c.progress != nil {
				lc.BytesSent, lc.BytesReceived = c.progress()
			}
			out = append(out, lc)
		}
		c.mu.Unlock()
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out
}
