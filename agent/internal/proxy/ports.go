package proxy

import "github.com/ambient-agent/ambient-agent/ports"

// IllegalPort reports whether p is one of the agent's own data-path ports
// (ports.Illegal): traffic to them is never forwarded, or the agent would
// loop into itself.
func IllegalPort(p uint16) bool { return ports.Illegal(p) }
