//go:build soakbroken_leak

package proxy

// A deliberately broken agent for the soak: one goroutine leaked per tunnelled connection.
func init() {
	brokenOutbound = func(*Outbound, Route) {
		go func() { select {} }()
	}
}
