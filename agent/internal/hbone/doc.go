// Package hbone speaks HBONE, the HTTP/2 CONNECT tunnel over mutual TLS that ztunnels, sidecars and waypoints use
// (spec/hbone.md): the server behind port 15008, the pooled client, and the stream layer both share.
//
// It owns the wire: TLS handshakes on connections it is handed, HTTP/2 framing, flow control, keepalive, the
// CONNECT request and its headers, the response codes, half-close, and byte copying for inbound tunnels. It knows
// identities (the peer's SPIFFE ID from its verified certificate) but no policy and no mesh state: every decision is
// taken by the caller through the Authorize callback (server) or the Destination it dials (client).
//
// The HTTP/2 layer is written directly on golang.org/x/net/http2's Framer and hpack rather than net/http: a tunnel
// is a byte pipe, and the request/response machinery of net/http costs about two thirds of the throughput TLS
// alone reaches. DATA frames are read into and written from pooled buffers without intermediate copies.
//
// Every failure has one name from a closed vocabulary (Flag), used in errors, in the Telemetry hooks and, by the
// caller, in metrics and access logs.
//
// hbone must not import state, policy, proxy, app or any other package of the agent: it is a leaf above identity
// in the dependency order, and the proxy passes in what it needs (TLS configurations, an authorize callback,
// a dialer that sets socket marks).
package hbone
