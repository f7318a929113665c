package config

import (
	"fmt"
	"net/netip"
	"slices"
)

// agentPorts are never captured inbound: capturing them would loop the agent into
// itself or cut operators off from it.
var agentPorts = []uint16{PortAdmin, PortOutbound, PortInbound, PortHBONE, PortMetrics, PortReadiness, PortDNS}

func (b *builder) capture(f CaptureFile) Capture {
	c := Capture{Enabled: true, Mark: DefaultMark, ExcludeInboundPorts: DefaultExcludeInboundPorts}
	if f.Enabled != nil {
		c.Enabled = *f.Enabled
	}
	if f.Mark != nil {
		if *f.Mark <= 0 || *f.Mark > 0xffffffff {
			b.addf("capture.mark", "%d is not a non-zero 32-bit mark", *f.Mark)
		}
		c.Mark = uint32(*f.Mark)
	}
	if f.ExcludeInboundPorts != nil {
		c.ExcludeInboundPorts = b.ports("capture.exclude_inbound_ports", f.ExcludeInboundPorts)
	}
	c.ExcludeOutboundPorts = b.ports("capture.exclude_outbound_ports", f.ExcludeOutboundPorts)
	for i, s := range f.ExcludeCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			b.addf(fmt.Sprintf("capture.exclude_cidrs[%d]", i), "%q is not a CIDR (e.g. 10.0.0.0/8)", s)
			continue
		}
		if p != p.Masked() {
			b.addf(fmt.Sprintf("capture.exclude_cidrs[%d]", i), "%q has host bits set; did you mean %s?", s, p.Masked())
			continue
		}
		c.ExcludeCIDRs = append(c.ExcludeCIDRs, p)
	}
	c.ExcludeUIDs = b.ids("capture.exclude_uids", f.ExcludeUIDs)
	c.ExcludeGIDs = b.ids("capture.exclude_gids", f.ExcludeGIDs)
	return c
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
