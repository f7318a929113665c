package telemetry

import (
	"log/slog"
	"net/netip"
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
	done   bool
}

// Open starts recording a connection.
func (m *Metrics) Open(log *slog.Logger, info ConnInfo, labels ConnLabels) *Conn {
	m.opened.WithLabelValues(labels.values(FlagNone)...).Inc()
	m.open.WithLabelValues(labels.Reporter).Inc()
	return &Conn{m: m, log: log, info: info, labels: labels, start: time.Now()}
}

// Labels lets the caller complete labels learned after Open (e.g. the peer
// identity once the handshake is done). Call before Close.
func (c *Conn) Labels() *ConnLabels { return &c.labels }

// Close records the end of the connection. sent is what went from the client
// to the server, received the way back. Only the first call counts.
func (c *Conn) Close(sent, received int64, flag, reason string) {
	if c.done {
		return
	}
	c.done = true
	if flag == "" {
		flag = FlagNone
	}
	v := c.labels.values(flag)
	c.m.closed.WithLabelValues(v...).Inc()
	if flag != FlagNone {
		c.m.failed.WithLabelValues(v...).Inc()
	}
	// Istio's byte counters are from the reporter's point of view of the
	// request: received = client to server, sent = server to client.
	c.m.received.WithLabelValues(v...).Add(float64(sent))
	c.m.sent.WithLabelValues(v...).Add(float64(received))
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
		"response_flags", flag,
		"reason", reason,
	)
}

func orUnknown(s string) string {
	if s == "" {
		return Unknown
	}
	return s
}
