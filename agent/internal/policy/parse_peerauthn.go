package policy

import "strconv"

// peerAuthentication decodes and validates spec as istiod's webhook does (ValidatePeerAuthentication).
func (d *decoder) peerAuthentication(p fieldPath, spec map[string]any) *PeerAuthenticationSpec {
	d.fields(p, spec, "selector", "mtls", "portLevelMtls")
	out := &PeerAuthenticationSpec{Mode: MTLSUnset}
	out.Selector = d.selector(p.key("selector"), spec["selector"])
	out.Mode = d.mtls(p.key("mtls"), spec["mtls"])
	levels := d.object(p.key("portLevelMtls"), spec["portLevelMtls"])
	if levels != nil && len(levels) == 0 {
		d.fail(p.key("portLevelMtls"), "if set, must have at least one port")
	}
	if len(levels) > 0 && len(out.Selector) == 0 {
		d.fail(p.key("portLevelMtls"), "a mesh or namespace PeerAuthentication (no selector) cannot have port level mTLS")
	}
	for _, k := range sortedKeys(levels) {
		q := p.key("portLevelMtls").key(k)
		mode := d.mtls(q, levels[k])
		port, err := strconv.ParseUint(k, 10, 16)
		if err != nil || port == 0 {
			d.fail(q, "port must be in range 1..65535")
			continue
		}
		if out.PortLevelMTLS == nil {
			out.PortLevelMTLS = map[uint16]MTLSMode{}
		}
		out.PortLevelMTLS[uint16(port)] = mode
	}
	return out
}

func (d *decoder) mtls(p fieldPath, v any) MTLSMode {
	m := d.object(p, v)
	d.fields(p, m, "mode")
	mode := MTLSMode(d.str(p.key("mode"), m["mode"]))
	switch mode {
	case "":
		return MTLSUnset
	case MTLSUnset, MTLSDisable, MTLSPermissive, MTLSStrict:
		return mode
	}
	d.fail(p.key("mode"), "%q is not a mode (UNSET, DISABLE, PERMISSIVE or STRICT)", mode)
	return MTLSUnset
}
