//go:build soakbroken_plaintext

package proxy

import "context"

// A deliberately broken agent for the soak: before each tunnelled connection, one byte of it sent in plaintext
// to its destination.
func init() {
	brokenOutbound = func(o *Outbound, r Route) {
		ctx, cancel := context.WithTimeout(context.Background(), ConnectTimeout)
		defer cancel()
		if c, err := o.d.Dialer.DialContext(ctx, "tcp", r.Target.String()); err == nil {
			_, _ = c.Write([]byte{'P'})
			_ = c.Close()
		}
	}
}
