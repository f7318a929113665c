package hbone

import (
	"encoding/hex"
	"math/rand/v2"
	"net/netip"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// Baggage is what a ztunnel says about the source workload in the W3C baggage header of its CONNECT requests.
// Empty fields are omitted from the header.
type Baggage struct {
	ClusterName string
	Namespace   string
	// WorkloadType is deployment, cronjob, pod or job; empty means deployment (the proto default ztunnel uses).
	WorkloadType     string
	WorkloadName     string
	ServiceName      string // canonical service
	ServiceVersion   string // canonical revision
	Region           string
	AvailabilityZone string
}

// String renders the header value: comma-joined key=value pairs in ztunnel's order, empty values omitted.
func (b Baggage) String() string {
	wt := b.WorkloadType
	if wt == "" {
		wt = "deployment"
	}
	var sb strings.Builder
	add := func(key, val string) {
		if val == "" {
			return
		}
		if sb.Len() > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(key)
		sb.WriteByte('=')
		sb.WriteString(val)
	}
	add("k8s.cluster.name", b.ClusterName)
	add("k8s.namespace.name", b.Namespace)
	add("k8s."+wt+".name", b.WorkloadName)
	add("service.name", b.ServiceName)
	add("service.version", b.ServiceVersion)
	add("cloud.region", b.Region)
	add("cloud.availability_zone", b.AvailabilityZone)
	return sb.String()
}

// forwardedValue renders `for="<ip:port>"` plus `;host=<hostname>` when a host is known, or "" with no client.
func forwardedValue(client netip.AddrPort, host string) string {
	if !client.IsValid() {
		return ""
	}
	v := `for="` + client.String() + `"`
	if host != "" {
		v += ";host=" + host
	}
	return v
}

// newTraceparent returns a random W3C traceparent, `00-<32 hex>-<16 hex>-00`, as ztunnel sends one per tunnel.
func newTraceparent() string {
	var b [24]byte
	for i := 0; i < 24; i += 8 {
		v := rand.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	var out [55]byte
	copy(out[:3], "00-")
	hex.Encode(out[3:35], b[:16])
	out[35] = '-'
	hex.Encode(out[36:52], b[16:])
	copy(out[52:], "-00")
	return string(out[:])
}

// requestFields is the CONNECT header list in wire order: the two pseudo-headers, then baggage, forwarded and
// traceparent. No user-agent and no x-istio-* headers. The traceparent is never indexed: it is random per tunnel
// and would only churn the HPACK table.
func requestFields(req *Tunnel) []hpack.HeaderField {
	fields := make([]hpack.HeaderField, 0, 5)
	fields = append(fields,
		hpack.HeaderField{Name: ":method", Value: "CONNECT"},
		hpack.HeaderField{Name: ":authority", Value: req.Authority})
	if bg := req.Baggage.String(); bg != "" {
		fields = append(fields, hpack.HeaderField{Name: "baggage", Value: bg})
	}
	if fw := forwardedValue(req.ForwardedFor, req.ForwardedHost); fw != "" {
		fields = append(fields, hpack.HeaderField{Name: "forwarded", Value: fw})
	}
	if req.ForwardedNetwork != "" {
		fields = append(fields, hpack.HeaderField{Name: "x-forwarded-network", Value: req.ForwardedNetwork})
	}
	return append(fields, hpack.HeaderField{Name: "traceparent", Value: newTraceparent(), Sensitive: true})
}

// Header is one regular request header as received.
type Header struct {
	Name, Value string
}

// parseForwardedHost extracts the `host=` of the first element of a Forwarded header, lowercase, "" when none.
func parseForwardedHost(v string) string {
	first, _, _ := strings.Cut(v, ",")
	for pair := range strings.SplitSeq(first, ";") {
		key, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if ok && strings.EqualFold(key, "host") {
			return strings.ToLower(strings.Trim(val, `"`))
		}
	}
	return ""
}

// parseForwardedFor extracts the first `for=` node of a Forwarded header as an address and port, tolerating a
// missing port (port 0) and missing quotes; anything else gives an invalid AddrPort.
func parseForwardedFor(v string) netip.AddrPort {
	first, _, _ := strings.Cut(v, ",")
	for pair := range strings.SplitSeq(first, ";") {
		key, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !strings.EqualFold(key, "for") {
			continue
		}
		val = strings.Trim(val, `"`)
		if ap, err := netip.ParseAddrPort(val); err == nil {
			return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		if ip, err := netip.ParseAddr(strings.Trim(val, "[]")); err == nil {
			return netip.AddrPortFrom(ip.Unmap(), 0)
		}
		return netip.AddrPort{}
	}
	return netip.AddrPort{}
}
