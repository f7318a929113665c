// Package proxy is the data path: the outbound proxy (15001) for captured
// traffic of local processes, the inbound plaintext proxy (15006) for captured
// traffic that did not arrive over HBONE, and the decision callback of the HBONE
// server (15008). It routes with the state snapshot per spec/routing.md and
// carries bytes with half-close in both directions.
//
// proxy must not import app or admin. Every connection it accepts is tracked so
// that a drain can wait for it and, at the deadline, close it.
package proxy
