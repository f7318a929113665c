// Package hbone speaks HBONE, the HTTP/2 CONNECT tunnel over mutual TLS that ztunnels, sidecars and waypoints use
// (spec/hbone.md): the server behind port 15008, the pooled client, and the stream layer both share.
//
// It owns the wire: TLS handshakes on connections it is handed, HTTP/2 framing, flow control, keepalive, the
// CONNECT request and its headers, the response codes, half-close, and byte copying for inbound tunnels. It knows
// identities (the peer's SPIFFE ID from its verified certificate) but no policy and no mesh state: every decision is
// the caller's. On the server, a Handler answers each CONNECT as a Request (refuse it, or accept it and relay it to
// an upstream connection the handler made); on the client, one Tunnel value says which identity goes to which peer
// and what the CONNECT asks.
//
// The HTTP/2 layer is written directly on golang.org/x/net/http2's Framer and hpack rather than net/http: a tunnel
// is a byte pipe, and the request/response machinery of net/http costs about two thirds of the throughput TLS
// alone reaches. DATA frames are read into and written from pooled buffers without intermediate copies.
//
// Every failure has one name from a closed vocabulary (Flag), used in errors, in Handler.Refused and the pool's
// Telemetry hooks and, by the caller, mapped onto Istio's response flags.
//
// hbone must not import state, policy, proxy, app or any other package of the agent: it is a leaf above identity
// in the dependency order, and the proxy passes in what it needs (the certificate choice, a handler, a dialer that
// sets socket marks).
package hbone
