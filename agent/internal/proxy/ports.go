package proxy

// IllegalPort reports whether p is one of the agent's own data-path ports
// (15001, 15006, 15008): traffic to them is never forwarded, or the agent would
// loop into itself.
func IllegalPort(p uint16) bool {
	return p == 15001 || p == 15006 || p == 15008
}
