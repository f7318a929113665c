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
	m      *Metrics
	log    *slog.Logger
	info   ConnInfo
	labels ConnLabels
	start  time.Time

	// mu orders a scrape's flush against Close; nothing on the data path takes it.
	mu       sync.Mutex
	done     bool
	progress func() (sent, received int64)
	counted  [2]int64 // sent, received already added to the byte counters
}

// Open starts recording a connection.
func (m *Metrics) Open(log *slog.Logger, info ConnInfo, labels ConnLabels) *Conn {
	m.opened.WithLabelValues(labels.values(FlagNone)...).Inc()
	m.open.WithLabelValues(labels.Reporter).Inc()
	return &Conn{m: m, log: log, info: info, labels: labels, start: time.Now()}
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
	v := c.labels.values(FlagNone)
	// Istio's byte counters are from the reporter's point of view of the
	// request: received = client to server, sent = server to client.
	if d := sent - c.counted[0]; d > 0 {
		c.m.received.WithLabelValues(v...).Add(float64(d))
		c.counted[0] = sent
	}
	if d := received - c.counted[1]; d > 0 {
		c.m.sent.WithLabelValues(v...).Add(float64(d))
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
// identity once the handshake is done). Call before Close.
func (c *Conn) Labels() *ConnLabels { return &c.labels }

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
	v := c.labels.values(flag)
	c.m.closed.WithLabelValues(v...).Inc()
	if flag != FlagNone {
		c.m.failed.WithLabelValues(v...).Inc()
	}
	c.m.open.WithLabelValues(c.labels.Reporter).Dec()
	level := slog.LevelInfo
	if flag != FlagNone {
		level = slog.LevelWarn
	}
	c.log.Log(nil, level, "access",
		"direction", c.info.Direction,
		"src", c.info.Src.String(),
		"dst", c.info.Dst.String(),
		"route", c.info.Route,
		"src_workload", orUnknown(c.labels.SourceWorkload),
		"src_identity", orUnknown(c.labels.SourcePrincipal),
		"dst_workload", orUnknown(c.labels.DestinationWorkload),
		"dst_identity", orUnknown(c.labels.DestinationPrincipal),
		"dst_service", orUnknown(c.labels.DestinationService),
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
			lc := LiveConn{Direction: c.info.Direction, Src: c.info.Src, Dst: c.info.Dst, Route: c.info.Route,
				SrcWorkload: c.labels.SourceWorkload, SrcIdentity: c.labels.SourcePrincipal,
				DstWorkload: c.labels.DestinationWorkload, DstIdentity: c.labels.DestinationPrincipal,
				DstService: c.labels.DestinationService, Since: c.start}
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
