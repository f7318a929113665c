package policy

import "strings"

// authorizationPolicy decodes and validates spec as istiod's webhook does (ValidateAuthorizationPolicy).
func (d *decoder) authorizationPolicy(p fieldPath, spec map[string]any) *AuthorizationPolicySpec {
	d.fields(p, spec, "selector", "targetRef", "targetRefs", "action", "provider", "rules")
	out := &AuthorizationPolicySpec{Action: ActionAllow}
	out.Selector = d.selector(p.key("selector"), spec["selector"])
	out.TargetRefs = d.targetRefs(p, spec)
	if spec["selector"] != nil && len(out.TargetRefs) > 0 {
		d.fail(p.key("selector"), "only one of targetRefs or selector can be set")
	}
	if a := d.str(p.key("action"), spec["action"]); a != "" {
		out.Action = Action(a)
		switch out.Action {
		case ActionAllow, ActionDeny, ActionAudit, ActionCustom:
		default:
			d.fail(p.key("action"), "%q is not an action (ALLOW, DENY, AUDIT or CUSTOM)", a)
		}
	}
	if prov := d.object(p.key("provider"), spec["provider"]); prov != nil {
		d.fields(p.key("provider"), prov, "name")
		out.Provider = d.str(p.key("provider").key("name"), prov["name"])
		if out.Action != ActionCustom {
			d.fail(p.key("provider"), "must not be set with action %s, only with CUSTOM", out.Action)
		}
	}
	out.Rules = d.rules(p.key("rules"), spec["rules"], out.Action)
	switch {
	case out.Action == ActionDeny && len(out.Rules) == 0:
		d.fail(p.key("rules"), "a DENY policy without rules never applies; add an empty rule `{}` to deny everything")
	case out.Action == ActionCustom && len(out.Rules) == 0:
		d.fail(p.key("rules"), "a CUSTOM policy without rules never applies; add an empty rule `{}`")
	case out.Action == ActionCustom && out.Provider == "":
		d.fail(p.key("provider").key("name"), "required with action CUSTOM")
	}

	return out
}

// targetRefs decodes targetRef or targetRefs (one of them).
func (d *decoder) targetRefs(p fieldPath, spec map[string]any) []TargetRef {
	var out []TargetRef
	if ref := d.object(p.key("targetRef"), spec["targetRef"]); ref != nil {
		out = append(out, d.targetRef(p.key("targetRef"), ref))
	}
	refs := d.list(p.key("targetRefs"), spec["targetRefs"])
	if len(refs) > maxTargetRefs {
		d.fail(p.key("targetRefs"), "at most %d references, not %d", maxTargetRefs, len(refs))
	}
	for i, v := range refs {
		q := p.key("targetRefs").index(i)
		if ref := d.object(q, v); ref != nil {
			out = append(out, d.targetRef(q, ref))
		} else {
			d.fail(q, "must not be null")
		}
	}
	if spec["targetRef"] != nil && spec["targetRefs"] != nil {
		d.fail(p.key("targetRefs"), "only one of targetRef or targetRefs can be set")
	}
	return out
}

// rules decodes the rules of a policy with action a.
func (d *decoder) rules(p fieldPath, v any, a Action) []RuleSpec {
	var out []RuleSpec
	for i, v := range d.list(p, v) {
		q := p.index(i)
		m := d.object(q, v)
		if m == nil {
			d.fail(q, "must not be null (write {} for a rule that matches everything)")
			continue
		}
		out = append(out, d.rule(q, m, a))
	}
	return out
}

func (d *decoder) selector(p fieldPath, v any) map[string]string {
	m := d.object(p, v)
	d.fields(p, m, "matchLabels")
	labels := d.strMap(p.key("matchLabels"), m["matchLabels"])
	for _, k := range sortedKeys(labels) {
		if err := checkLabel(k, labels[k]); err != nil {
			d.fail(p.key("matchLabels").key(k), "%v", err)
		}
	}
	return labels
}

func (d *decoder) targetRef(p fieldPath, m map[string]any) TargetRef {
	d.fields(p, m, "group", "kind", "name", "namespace")
	ref := TargetRef{
		Group:     d.str(p.key("group"), m["group"]),
		Kind:      d.str(p.key("kind"), m["kind"]),
		Name:      d.str(p.key("name"), m["name"]),
		Namespace: d.str(p.key("namespace"), m["namespace"]),
	}
	if ref.Kind == "" {
		d.fail(p.key("kind"), "required")
	}
	if ref.Name == "" {
		d.fail(p.key("name"), "required")
	}
	if ref.Namespace != "" {
		d.fail(p.key("namespace"), "must not be set: cross namespace referencing is not supported (the target is in the policy's namespace)")
	}
	if ref.Kind != "" && kindOf(ref) == refUnsupported {
		d.fail(p.key("kind"), "%s is not a target: use a Service (group \"\"), a networking.istio.io ServiceEntry, or a gateway.networking.k8s.io Gateway or GatewayClass", groupKind(ref))
	}
	return ref
}

// maxTargetRefs is the CRD's limit on spec.targetRefs.
const maxTargetRefs = 16

func (d *decoder) rule(p fieldPath, m map[string]any, action Action) RuleSpec {
	d.fields(p, m, "from", "to", "when")
	var r RuleSpec
	for i, v := range d.list(p.key("from"), m["from"]) {
		q := p.key("from").index(i)
		from := d.object(q, v)
		d.fields(q, from, "source")
		src := d.object(q.key("source"), from["source"])
		if src == nil {
			d.fail(q.key("source"), "required")
			continue
		}
		r.From = append(r.From, d.source(q.key("source"), src, action))
	}
	for i, v := range d.list(p.key("to"), m["to"]) {
		q := p.key("to").index(i)
		to := d.object(q, v)
		d.fields(q, to, "operation")
		op := d.object(q.key("operation"), to["operation"])
		if op == nil {
			d.fail(q.key("operation"), "required")
			continue
		}
		r.To = append(r.To, d.operation(q.key("operation"), op))
	}
	for i, v := range d.list(p.key("when"), m["when"]) {
		q := p.key("when").index(i)
		c := d.object(q, v)
		if c == nil {
			d.fail(q, "must not be null")
			continue
		}
		r.When = append(r.When, d.condition(q, c, action))
	}
	return r
}

func (d *decoder) source(p fieldPath, m map[string]any, action Action) SourceSpec {
	problemsBefore := len(d.problems)
	d.fields(p, m, "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
		"namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts",
		"ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")
	field := func(name string) []string {
		vs := d.strList(p.key(name), m[name])
		d.checkNotEmpty(p.key(name), vs)
		return vs
	}
	s := SourceSpec{
		Principals:           field("principals"),
		NotPrincipals:        field("notPrincipals"),
		RequestPrincipals:    field("requestPrincipals"),
		NotRequestPrincipals: field("notRequestPrincipals"),
		Namespaces:           field("namespaces"),
		NotNamespaces:        field("notNamespaces"),
		ServiceAccounts:      field("serviceAccounts"),
		NotServiceAccounts:   field("notServiceAccounts"),
		IPBlocks:             field("ipBlocks"),
		NotIPBlocks:          field("notIpBlocks"),
		RemoteIPBlocks:       field("remoteIpBlocks"),
		NotRemoteIPBlocks:    field("notRemoteIpBlocks"),
	}
	for _, f := range []namedValues{{"ipBlocks", s.IPBlocks}, {"notIpBlocks", s.NotIPBlocks},
		{"remoteIpBlocks", s.RemoteIPBlocks}, {"notRemoteIpBlocks", s.NotRemoteIPBlocks}} {
		d.checkIPs(p.key(f.name), f.values)
	}
	d.checkServiceAccounts(p.key("serviceAccounts"), s.ServiceAccounts)
	d.checkServiceAccounts(p.key("notServiceAccounts"), s.NotServiceAccounts)
	identity := len(s.Principals) + len(s.NotPrincipals) + len(s.Namespaces) + len(s.NotNamespaces)
	if identity > 0 && len(s.ServiceAccounts)+len(s.NotServiceAccounts) > 0 {
		d.fail(p, "serviceAccounts cannot be set together with namespaces or principals")
	}
	if identity+len(s.ServiceAccounts)+len(s.NotServiceAccounts)+len(s.RequestPrincipals)+len(s.NotRequestPrincipals)+
		len(s.IPBlocks)+len(s.NotIPBlocks)+len(s.RemoteIPBlocks)+len(s.NotRemoteIPBlocks) == 0 && len(d.problems) == problemsBefore {
		d.fail(p, "must not be empty")
	}
	if action == ActionCustom {
		for _, f := range []namedValues{{"principals", s.Principals}, {"notPrincipals", s.NotPrincipals},
			{"requestPrincipals", s.RequestPrincipals}, {"notRequestPrincipals", s.NotRequestPrincipals},
			{"namespaces", s.Namespaces}, {"notNamespaces", s.NotNamespaces},
			{"serviceAccounts", s.ServiceAccounts}, {"notServiceAccounts", s.NotServiceAccounts}} {
			if len(f.values) > 0 {
				d.fail(p.key(f.name), "not supported with action CUSTOM")
			}
		}
	}
	return s
}

func (d *decoder) operation(p fieldPath, m map[string]any) OperationSpec {
	problemsBefore := len(d.problems)
	d.fields(p, m, "hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")
	field := func(name string) []string {
		vs := d.strList(p.key(name), m[name])
		d.checkNotEmpty(p.key(name), vs)
		return vs
	}
	op := OperationSpec{
		Hosts:      field("hosts"),
		NotHosts:   field("notHosts"),
		Ports:      d.portList(p.key("ports"), m["ports"]),
		NotPorts:   d.portList(p.key("notPorts"), m["notPorts"]),
		Methods:    field("methods"),
		NotMethods: field("notMethods"),
		Paths:      field("paths"),
		NotPaths:   field("notPaths"),
	}
	d.checkPorts(p.key("ports"), op.Ports)
	d.checkPorts(p.key("notPorts"), op.NotPorts)
	if len(op.Hosts)+len(op.NotHosts)+len(op.Ports)+len(op.NotPorts)+len(op.Methods)+len(op.NotMethods)+
		len(op.Paths)+len(op.NotPaths) == 0 && len(d.problems) == problemsBefore {
		d.fail(p, "must not be empty")
	}
	return op
}

func (d *decoder) condition(p fieldPath, m map[string]any, action Action) ConditionSpec {
	d.fields(p, m, "key", "values", "notValues")
	c := ConditionSpec{Key: d.str(p.key("key"), m["key"])}
	if c.Key == "destination.port" {
		c.Values = d.portList(p.key("values"), m["values"])
		c.NotValues = d.portList(p.key("notValues"), m["notValues"])
	} else {
		c.Values = d.strList(p.key("values"), m["values"])
		c.NotValues = d.strList(p.key("notValues"), m["notValues"])
	}
	switch {
	case c.Key == "":
		d.fail(p.key("key"), "required")
		return c
	case len(c.Values) == 0 && len(c.NotValues) == 0:
		d.fail(p, "at least one of values or notValues must be set for key %s", c.Key)
		return c
	}
	if err := checkAttribute(c.Key); err != nil {
		d.fail(p.key("key"), "%v", err)
		return c
	}
	d.checkAttributeValues(p.key("values"), c.Key, c.Values)
	d.checkAttributeValues(p.key("notValues"), c.Key, c.NotValues)
	if action == ActionCustom && customUnsupportedKey(c.Key) {
		d.fail(p.key("key"), "%s is not supported with action CUSTOM", c.Key)
	}
	return c
}

func (d *decoder) checkAttributeValues(p fieldPath, key string, values []string) {
	d.checkNotEmpty(p, values)
	switch key {
	case "source.ip", "remote.ip", "destination.ip":
		d.checkIPs(p, values)
	case "destination.port":
		d.checkPorts(p, values)
	}
}

func (d *decoder) checkNotEmpty(p fieldPath, values []string) {
	for i, v := range values {
		if v == "" {
			d.fail(p.index(i), "empty value not allowed")
		}
	}
}

func (d *decoder) checkIPs(p fieldPath, values []string) {
	for i, v := range values {
		if _, err := parseIPBlock(v); err != nil && v != "" {
			d.fail(p.index(i), "%v", err)
		}
	}
}

func (d *decoder) checkPorts(p fieldPath, values []string) {
	for i, v := range values {
		if _, err := parsePort(v); err != nil {
			d.fail(p.index(i), "%v", err)
		}
	}
}

func (d *decoder) checkServiceAccounts(p fieldPath, values []string) {
	for i, v := range values {
		if _, err := parseServiceAccount(v, "ns"); err != nil && v != "" {
			d.fail(p.index(i), "%v", err)
		}
	}
}

// namedValues is one list field, for checks that walk several fields in a fixed order.
type namedValues struct {
	name   string
	values []string
}

func customUnsupportedKey(key string) bool {
	return key == "source.namespace" || key == "source.serviceAccount" || key == "source.principal" ||
		strings.HasPrefix(key, "request.auth.")
}
