package config

// Limits bound what one source address, and all together, may hold of the
// agent's inbound ports, so that one client cannot take every file descriptor
// (LimitNOFILE is 262144 under systemd). A connection over a limit is closed at
// once; a tunnel over one is answered 503.
type Limits struct {
	// Connections in their TLS handshake (or HTTP/2 preface) on the HBONE port.
	HandshakesPerSource int `json:"handshakesPerSource"`
	Handshakes          int `json:"handshakes"`
	// Open connections, on the HBONE port and on the inbound plaintext port each.
	ConnectionsPerSource int `json:"connectionsPerSource"`
	Connections          int `json:"connections"`
	// Open HBONE tunnels (each an upstream connection).
	StreamsPerSource int `json:"streamsPerSource"`
	Streams          int `json:"streams"`
	// Open captured outbound connections of the host's processes, all together.
	Outbound int `json:"outbound"`
}

// Default limits.
const (
	DefaultHandshakesPerSource  = 64
	DefaultHandshakes           = 1024
	DefaultConnectionsPerSource = 1024
	DefaultConnections          = 8192
	DefaultStreamsPerSource     = 16384
	DefaultStreams              = 32768
	DefaultOutbound             = 16384
)

// LimitsFile is the [limits] table.
type LimitsFile struct {
	HandshakesPerSource  *int `toml:"handshakes_per_source"`
	Handshakes           *int `toml:"handshakes"`
	ConnectionsPerSource *int `toml:"connections_per_source"`
	Connections          *int `toml:"connections"`
	StreamsPerSource     *int `toml:"streams_per_source"`
	Streams              *int `toml:"streams"`
	Outbound             *int `toml:"outbound"`
}

func (b *builder) limits(f LimitsFile) Limits {
	n := func(key string, v *int, def int) int {
		if v == nil {
			return def
		}
		if *v < 1 || *v > 1<<20 {
			b.addf("limits."+key, "%d is not between 1 and 1048576", *v)
		}
		return *v
	}
	return Limits{
		HandshakesPerSource:  n("handshakes_per_source", f.HandshakesPerSource, DefaultHandshakesPerSource),
		Handshakes:           n("handshakes", f.Handshakes, DefaultHandshakes),
		ConnectionsPerSource: n("connections_per_source", f.ConnectionsPerSource, DefaultConnectionsPerSource),
		Connections:          n("connections", f.Connections, DefaultConnections),
		StreamsPerSource:     n("streams_per_source", f.StreamsPerSource, DefaultStreamsPerSource),
		Streams:              n("streams", f.Streams, DefaultStreams),
		Outbound:             n("outbound", f.Outbound, DefaultOutbound),
	}
}
