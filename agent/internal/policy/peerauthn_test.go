package policy

import (
	"strings"
	"testing"
)

// pa builds a PeerAuthentication. selector and ports are YAML flow maps ("" for none).
func pa(name, namespace, selector, mode, ports string) string {
	s := "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: " + name + ", namespace: " + namespace + "}\nspec:\n"
	if selector != "" {
		s += "  selector: {matchLabels: " + selector + "}\n"
	}
	if mode != "" {
		s += "  mtls: {mode: " + mode + "}\n"
	}
	if ports != "" {
		s += "  portLevelMtls: " + ports + "\n"
	}
	return s + "---\n"
}

// plaintextTo is a plaintext connection to a workload.
func plaintextTo(namespace string, labels map[string]string, port uint16) Conn {
	return Conn{DestNamespace: namespace, DestLabels: labels, DestIP: addr("10.0.0.2"), DestPort: port, SourceIP: addr("10.0.0.1")}
}

var (
	web = map[string]string{"app": "web"}
	db  = map[string]string{"app": "db"}
)

func TestPeerAuthenticationResolution(t *testing.T) {
	type probe struct {
		conn   Conn
		denyBy string // the PeerAuthentication that denies the plaintext connection; "" for allowed
	}
	cases := []struct {
		name     string
		yaml     string
		probes   []probe
		compiled map[string][]string // key -> compiled rules
	}{
		{
			name: "mesh STRICT applies to every namespace",
			yaml: pa("mesh", "istio-system", "", "STRICT", ""),
			probes: []probe{
				{plaintextTo("default", web, 8080), "istio-system/mesh"},
				{plaintextTo("other", nil, 80), "istio-system/mesh"},
			},
			compiled: map[string][]string{"istio-system/mesh": {"0: [notPrincipals *]"}},
		},
		{
			name: "a namespace overrides the mesh; UNSET inherits",
			yaml: pa("mesh", "istio-system", "", "STRICT", "") + pa("open", "legacy", "", "PERMISSIVE", "") +
				pa("inherit", "default", "", "UNSET", ""),
			probes: []probe{
				{plaintextTo("legacy", web, 8080), ""},
				{plaintextTo("default", web, 8080), "istio-system/mesh"},
				{plaintextTo("other", web, 8080), "istio-system/mesh"},
			},
		},
		{
			name: "a workload overrides its namespace",
			yaml: pa("ns", "default", "", "STRICT", "") + pa("web-open", "default", "{app: web}", "PERMISSIVE", ""),
			probes: []probe{
				{plaintextTo("default", web, 8080), ""},
				{plaintextTo("default", db, 8080), "default/ns"},
			},
		},
		{
			name: "a STRICT workload in a permissive mesh",
			yaml: pa("web-strict", "default", "{app: web}", "STRICT", ""),
			probes: []probe{
				{plaintextTo("default", web, 8080), "default/web-strict"},
				{plaintextTo("default", db, 8080), ""},
				{plaintextTo("other", web, 8080), ""},
			},
		},
		{
			name: "STRICT workload with a PERMISSIVE port",
			yaml: pa("web", "default", "{app: web}", "STRICT", "{\"8080\": {mode: PERMISSIVE}, \"9090\": {mode: STRICT}}"),
			probes: []probe{
				{plaintextTo("default", web, 8080), ""},
				{plaintextTo("default", web, 9090), "default/web"},
				{plaintextTo("default", web, 443), "default/web"},
			},
			compiled: map[string][]string{"default/web": {"0: [notPrincipals *] AND [notPorts 8080]"}},
		},
		{
			name: "PERMISSIVE workload with STRICT ports",
			yaml: pa("web", "default", "{app: web}", "PERMISSIVE", "{\"9090\": {mode: STRICT}, \"9443\": {mode: STRICT}, \"80\": {mode: DISABLE}}"),
			probes: []probe{
				{plaintextTo("default", web, 8080), ""},
				{plaintextTo("default", web, 9090), "default/web"},
				{plaintextTo("default", web, 9443), "default/web"},
			},
			compiled: map[string][]string{"default/web": {"0: [notPrincipals * ports 9090]", "1: [notPrincipals * ports 9443]"}},
		},
		{
			name: "UNSET workload inherits a STRICT namespace; its PERMISSIVE port is exempt",
			yaml: pa("ns", "default", "", "STRICT", "") + pa("web", "default", "{app: web}", "", "{\"8080\": {mode: PERMISSIVE}}"),
			probes: []probe{
				{plaintextTo("default", web, 8080), ""},
				{plaintextTo("default", web, 9090), "default/web"},
				{plaintextTo("default", db, 8080), "default/ns"},
			},
		},
		{
			name: "UNSET workload inherits a STRICT mesh; a DISABLE port is exempt too",
			yaml: pa("mesh", "istio-system", "", "STRICT", "") + pa("web", "default", "{app: web}", "", "{\"8080\": {mode: DISABLE}}"),
			probes: []probe{
				{plaintextTo("default", web, 8080), ""},
				{plaintextTo("default", web, 9090), "default/web"},
			},
		},
		{
			name: "UNSET workload in a permissive mesh with a STRICT port",
			yaml: pa("web", "default", "{app: web}", "", "{\"9090\": {mode: STRICT}}"),
			probes: []probe{
				{plaintextTo("default", web, 8080), ""},
				{plaintextTo("default", web, 9090), "default/web"},
			},
		},
		{
			name: "UNSET workload without port exceptions is its namespace's policy",
			yaml: pa("ns", "default", "", "STRICT", "") + pa("web", "default", "{app: web}", "UNSET", "{\"8080\": {mode: STRICT}}"),
			probes: []probe{
				{plaintextTo("default", web, 8080), "default/ns"},
				{plaintextTo("default", web, 9090), "default/ns"},
			},
		},
		{
			name: "a port-level UNSET inherits the workload's mode",
			yaml: pa("web", "default", "{app: web}", "STRICT", "{\"8080\": {mode: UNSET}}"),
			probes: []probe{
				{plaintextTo("default", web, 8080), "default/web"},
			},
		},
		{
			name: "PERMISSIVE everywhere adds nothing",
			yaml: pa("mesh", "istio-system", "", "PERMISSIVE", "") + pa("ns", "default", "", "DISABLE", ""),
			probes: []probe{
				{plaintextTo("default", web, 8080), ""},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, ws := compileYAML(t, tc.yaml)
			if len(ws) > 0 {
				t.Errorf("warnings:\n%s", warningsString(ws))
			}
			for _, p := range tc.probes {
				d := set.Evaluate(p.conn)
				switch {
				case p.denyBy == "" && !d.Allow:
					t.Errorf("%s %v port %d: %v, want ALLOW", p.conn.DestNamespace, p.conn.DestLabels, p.conn.DestPort, d)
				case p.denyBy != "" && (d.Allow || d.Policy != p.denyBy || d.Kind != KindPeerAuthentication):
					t.Errorf("%s %v port %d: %v, want DENY by PeerAuthentication %s", p.conn.DestNamespace, p.conn.DestLabels, p.conn.DestPort, d, p.denyBy)
				}
				withID := p.conn
				withID.SourceIdentity = id(sleep)
				if d := set.Evaluate(withID); !d.Allow {
					t.Errorf("an mTLS peer is denied: %v", d)
				}
			}
			for key, want := range tc.compiled {
				if got := compiledRules(t, set, key); strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("%s compiled:\n%s\nwant:\n%s", key, strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
			}
		})
	}
}

func TestOldestPeerAuthenticationWins(t *testing.T) {
	stamped := func(yaml, ts string) string {
		return strings.Replace(yaml, "metadata: {", "metadata: {creationTimestamp: \""+ts+"\", ", 1)
	}
	yaml := stamped(pa("newer", "default", "", "PERMISSIVE", ""), "2026-02-01T00:00:00Z") +
		stamped(pa("older", "default", "", "STRICT", ""), "2025-01-01T00:00:00Z") +
		stamped(pa("web-new", "default", "{app: web}", "STRICT", ""), "2026-02-01T00:00:00Z") +
		stamped(pa("web-old", "default", "{app: web}", "PERMISSIVE", ""), "2025-02-01T00:00:00Z")
	set, ws := compileYAML(t, yaml)
	if len(ws) != 1 || !strings.Contains(ws[0].String(), "default/newer: another PeerAuthentication for namespace default is older (default/older") {
		t.Errorf("warnings:\n%s", warningsString(ws))
	}
	if d := set.Evaluate(plaintextTo("default", db, 80)); d.Allow || d.Policy != "default/older" {
		t.Errorf("namespace level: %v", d)
	}
	if d := set.Evaluate(plaintextTo("default", web, 80)); !d.Allow {
		t.Errorf("the older workload policy (PERMISSIVE) should win: %v", d)
	}
	for _, s := range set.Summary() {
		if s.Name == "newer" && s.Enforced || s.Name == "older" && !s.Enforced {
			t.Errorf("summary %+v", s)
		}
	}

	// Without timestamps, the first loaded is the oldest.
	set, _ = compileYAML(t, pa("first", "default", "", "STRICT", "")+pa("second", "default", "", "PERMISSIVE", ""))
	if d := set.Evaluate(plaintextTo("default", db, 80)); d.Allow || d.Policy != "default/first" {
		t.Errorf("load order: %v", d)
	}
}

func TestRootNamespaceSelectorPeerAuthenticationIsIgnored(t *testing.T) {
	set, ws := compileYAML(t, pa("root-web", "istio-system", "{app: web}", "STRICT", ""))
	if len(ws) != 1 || !strings.Contains(ws[0].Msg, "root namespace is ignored") {
		t.Errorf("warnings:\n%s", warningsString(ws))
	}
	if d := set.Evaluate(plaintextTo("default", web, 80)); !d.Allow {
		t.Errorf("%v", d)
	}
	if sum := set.Summary(); len(sum) != 1 || sum[0].Enforced || sum[0].Warnings != 1 {
		t.Errorf("summary %+v", sum)
	}
}

// A STRICT PeerAuthentication and an ALLOW policy together: the DENY comes first.
func TestStrictBeforeAllow(t *testing.T) {
	set, _ := compileYAML(t, pa("strict", "default", "", "STRICT", "")+allowFrom("allow-ips", "default", "ipBlocks: [10.0.0.0/8]"))
	if d := set.Evaluate(plaintextTo("default", web, 80)); d.Allow || d.Kind != KindPeerAuthentication {
		t.Errorf("plaintext from an allowed IP: %v", d)
	}
	c := plaintextTo("default", web, 80)
	c.SourceIdentity = id(sleep)
	if d := set.Evaluate(c); !d.Allow || d.Policy != "default/allow-ips" {
		t.Errorf("mTLS from an allowed IP: %v", d)
	}
}
