package config

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/ambient-agent/ambient-agent/ports"
)

// agentPorts are never captured inbound: capturing them would loop the agent into
// itself or cut operators off from it.
var agentPorts = []uint16{ports.Admin, ports.Outbound, ports.InboundPlaintext, ports.HBONE, ports.Metrics, ports.Readiness, ports.DNS}

func (b *builder) capture(f CaptureFile) Capture {
	c := Capture{Enabled: true, Mark: DefaultMark, ExcludeInboundPorts: DefaultExcludeInboundPorts,
		InboundAddresses: orDefault(f.InboundAddresses, InboundAll)}
	if c.InboundAddresses != InboundAll && c.InboundAddresses != InboundWorkloads {
		b.addf("capture.inbound_addresses", "%q is not %q or %q", c.InboundAddresses, InboundAll, InboundWorkloads)
	}
	if f.Enabled != nil {
		c.Enabled = *f.Enabled
	}
	c.OriginalSource = f.OriginalSource == nil || *f.OriginalSource
	if f.Mark != nil {
		if *f.Mark <= 0 || *f.Mark > 0xffffffff {
			b.addf("capture.mark", "%d is not a non-zero 32-bit mark", *f.Mark)
		}
		c.Mark = uint32(*f.Mark)
	}
	if c.OriginalSource && c.Mark&ports.ReturnMark != 0 {
		b.addf("capture.mark", "0x%x shares a bit with the return path's mark 0x%x (original_source): choose another mark, or set original_source = false", c.Mark, ports.ReturnMark)
	}
	if f.ExcludeInboundPorts != nil {
		c.ExcludeInboundPorts = b.ports("capture.exclude_inbound_ports", f.ExcludeInboundPorts)
	}
	c.ExcludeOutboundPorts = b.ports("capture.exclude_outbound_ports", f.ExcludeOutboundPorts)
	c.ExcludeCIDRs = b.prefixes("capture.exclude_cidrs", f.ExcludeCIDRs)
	c.UnmeshedAddresses = b.prefixes("capture.unmeshed_addresses", f.UnmeshedAddresses)
	c.ExcludeUIDs = b.ids("capture.exclude_uids", f.ExcludeUIDs)
	c.ExcludeGIDs = b.ids("capture.exclude_gids", f.ExcludeGIDs)
	return c
}

// How much of the host inbound capture covers ([capture] inbound_addresses).
const (
	InboundAll       = "all"
	InboundWorkloads = "workloads"
)

// prefixes parses CIDRs or single addresses (a /32 or /128).
func (b *builder) prefixes(key string, in []string) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Is4In6() {
				b.addf(fmt.Sprintf("%s[%d]", key, i), "%q is not a CIDR (e.g. 10.0.0.0/8) or an address", s)
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p != p.Masked() {
			b.addf(fmt.Sprintf("%s[%d]", key, i), "%q has host bits set; did you mean %s?", s, p.Masked())
			continue
		}
		out = append(out, p)
	}
	return out
}

// unmeshedWorkloads reports workload addresses inside [capture]
// unmeshed_addresses: a workload's address is always captured.
func (b *builder) unmeshedWorkloads(c Capture, ws []Workload) {
	for _, w := range ws {
		for _, a := range w.Addresses {
			for _, p := range c.UnmeshedAddresses {
				if p.Contains(a) {
					b.addf("capture.unmeshed_addresses", "%s contains %s, an address of workload %s/%s: a workload's address is always meshed", p, a, w.Namespace, w.Name)
				}
			}
		}
	}
}

// InboundExcludedPorts is the full set of inbound ports left uncaptured: the
// configured ones plus the agent's own.
func (c Capture) InboundExcludedPorts() []uint16 {
	out := slices.Clone(c.ExcludeInboundPorts)
	for _, p := range agentPorts {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

func (b *builder) ports(key string, in []int64) []uint16 {
	out := make([]uint16, 0, len(in))
	for i, p := range in {
		if p < 1 || p > 65535 {
			b.addf(fmt.Sprintf("%s[%d]", key, i), "%d is not a port (1-65535)", p)
			continue
		}
		out = append(out, uint16(p))
	}
	return out
}

func (b *builder) ids(key string, in []int64) []uint32 {
	out := make([]uint32, 0, len(in))
	for i, id := range in {
		if id < 0 || id >= 0xffffffff {
			b.addf(fmt.Sprintf("%s[%d]", key, i), "%d is not a user or group id", id)
			continue
		}
		out = append(out, uint32(id))
	}
	return out
}
