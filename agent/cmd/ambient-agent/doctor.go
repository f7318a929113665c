package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/xds"
	"github.com/ambient-agent/ambient-agent/nft"
	"github.com/ambient-agent/ambient-agent/ports"
)

// check is one line of the doctor's checklist.
type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
	// Note marks an OK check that says something the operator should know.
	Note bool `json:"note,omitempty"`
}

func runDoctor(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("doctor", "doctor [-socket PATH] [-json]", stderr)
	f := newCLIFlags(fs)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	checks := diagnose(*f.socket, time.Now())
	failed := slices.ContainsFunc(checks, func(c check) bool { return !c.OK })
	if *f.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(checks)
	} else {
		for _, c := range checks {
			mark := "OK  "
			switch {
			case !c.OK:
				mark = "FAIL"
			case c.Note:
				mark = "NOTE"
			}
			fmt.Fprintf(stdout, "[%s] %s: %s\n", mark, c.Name, c.Detail)
			if (!c.OK || c.Note) && c.Fix != "" {
				fmt.Fprintf(stdout, "       fix: %s\n", c.Fix)
			}
		}
	}
	if failed {
		return 1
	}
	return 0
}

// diagnose runs every check it can; later checks need the agent's dump.
func diagnose(socket string, now time.Time) []check {
	var out []check
	kernel, kerr := nft.Inspect(0)
	out = append(out, checkKernel(kerr))
	d, _, err := fetchDump(socket)
	if err != nil {
		return append(out, check{Name: "agent", Detail: err.Error(),
			Fix: "start it: systemctl start ambient-agent; see journalctl -u ambient-agent"})
	}
	out = append(out, checkReady(d))
	if kerr == nil {
		out = append(out, checkTable(d, kernel))
	}
	out = append(out, checkListeners(d)...)
	if d.Capture.Enabled {
		out = append(out, checkUnmeshed(d, listeners()))
	}
	if d.Capture.Enabled && d.Config.Capture.OriginalSource {
		p := capture.AgentReturnPath(d.Config.Capture.Mark)
		installed, err := p.Installed()
		out = append(out, checkReturnPath(p, installed, err, kerr != nil || kernel.Zone))
	}
	out = append(out, checkClock(d, now))
	out = append(out, checkCerts(d, now)...)
	if d.Config.Identity.Source == config.SourceIstio {
		out = append(out, checkTokens(d, now)...)
	}
	if len(d.Services) > 0 {
		out = append(out, checkVIPRoutes(d))
	}
	if d.Istiod != nil {
		out = append(out, checkIstiod(d.Istiod, now))
		if d.Istiod.Connected {
			out = append(out, checkIstiodEntries(d))
		}
	}
	if d.Config.Gossip.Enabled {
		out = append(out, checkGossipKey(d.Config.Gossip.KeyFile), checkPeers(d), checkRejected(d))
	}
	if c, ok := checkUnboundWaypoints(d); ok {
		out = append(out, c)
	}
	return append(out, checkClaims(d)...)
}

// checkUnboundWaypoints notes the captured local workloads that name no
// waypoint while one runs in their namespace: before waypoints were bound
// explicitly (as Istio 1.22 and later), such a workload used it.
func checkUnboundWaypoints(d *admin.Dump) (check, bool) {
	byNS := map[string]string{}
	for _, wp := range d.Waypoints {
		if _, seen := byNS[wp.Namespace]; !seen {
			byNS[wp.Namespace] = wp.Name
		}
	}
	var parts []string
	for _, w := range d.Workloads {
		if wp, ok := byNS[w.Namespace]; ok && w.Local && w.Tunnel == "HBONE" && w.UseWaypoint == "" {
			parts = append(parts, fmt.Sprintf("%s/%s (waypoint %s/%s runs in its namespace)", w.Namespace, w.Name, w.Namespace, wp))
		}
	}
	if len(parts) == 0 {
		return check{}, false
	}
	return check{Name: "waypoint binding", OK: true, Note: true,
		Detail: "these workloads name no waypoint, so none is used: " + strings.Join(parts, ", "),
		Fix:    `waypoints apply only where use_waypoint names them (docs/services.md); set use_waypoint = "<name>" to use one, or "none" to say so`}, true
}

// checkIstiod says whether the cluster state the agent serves is current: while
// istiod is unreachable the agent keeps the last state it received.
func checkIstiod(s *xds.Status, now time.Time) check {
	held := fmt.Sprintf("%d addresses, %d policies", s.Addresses, s.Policies)
	if s.Rejected > 0 {
		held += fmt.Sprintf(", %d resources refused (NACK)", s.Rejected)
	}
	if s.Connected {
		return check{Name: "istiod", OK: true, Detail: fmt.Sprintf("connected to %s for %s; %s", s.Address, now.Sub(s.Since).Round(time.Second), held)}
	}
	state := "no cluster state received yet"
	if !s.LastResponse.IsZero() {
		state = fmt.Sprintf("the cluster state in use is %s old (%s)", now.Sub(s.LastResponse).Round(time.Second), held)
	}
	detail := fmt.Sprintf("not connected to %s for %s: %s", s.Address, now.Sub(s.Since).Round(time.Second), state)
	if s.LastError != "" {
		detail += "; last error: " + s.LastError
	}
	return check{Name: "istiod", Detail: detail,
		Fix: "check [istio] address and root_cert, that istiod is reachable from this host, and the token or certificate (journalctl -u ambient-agent)"}
}

// checkIstiodEntries says whether istiod knows each local workload: it sends a WorkloadEntry (or an
// auto-registered one) at the workload's address. Without one, the cluster cannot reach the workload.
func checkIstiodEntries(d *admin.Dump) check {
	var missing, registering []string
	for _, w := range d.Workloads {
		if !w.Local {
			continue
		}
		if _, ok := d.IstiodEntries[w.UID]; ok {
			continue
		}
		name := w.Namespace + "/" + w.Name
		if cw := configWorkload(d, w.Namespace, w.Name); cw != nil && cw.AutoRegister != "" {
			registering = append(registering, name+" (auto_register "+cw.AutoRegister+")")
			continue
		}
		missing = append(missing, name)
	}
	switch {
	case len(missing) == 0 && len(registering) == 0:
		return check{Name: "istiod's WorkloadEntries", OK: true, Detail: "istiod knows every local workload"}
	case len(missing) == 0:
		return check{Name: "istiod's WorkloadEntries", Detail: "istiod has not registered " + strings.Join(registering, ", "),
			Fix: "check that the WorkloadGroup exists in the workload's namespace, with no other serviceAccount (journalctl -u ambient-agent, istiod-registration)"}
	}
	return check{Name: "istiod's WorkloadEntries", Detail: "istiod has no WorkloadEntry for " + strings.Join(append(missing, registering...), ", "),
		Fix: "ambient-agent export kubernetes | kubectl apply -f -, or set auto_register (docs/kubernetes.md)"}
}

// configWorkload is the configured local workload ns/name, or nil.
func configWorkload(d *admin.Dump, ns, name string) *config.Workload {
	for i := range d.Config.Workloads {
		if w := &d.Config.Workloads[i]; w.Namespace == ns && w.Name == name {
			return w
		}
	}
	return nil
}

// checkRejected reports the peers' records this agent dropped: unsigned, mis-signed, expired, claiming an
// identity or address they do not prove (docs/gossip.md).
func checkRejected(d *admin.Dump) check {
	if len(d.GossipRejected) == 0 {
		return check{Name: "gossip records", OK: true, Detail: "none rejected"}
	}
	var parts []string
	for _, reason := range slices.Sorted(maps.Keys(d.GossipRejected)) {
		parts = append(parts, fmt.Sprintf("%s=%d", reason, d.GossipRejected[reason]))
	}
	return check{Name: "gossip records", Detail: "rejected: " + strings.Join(parts, " "),
		Fix: "journalctl -u ambient-agent names the node of each; a host that holds the gossip key is claiming what it cannot prove, or runs an agent that does not sign (see [gossip] accept_unsigned)"}
}

// checkClaims reports every claim the mesh state does not use: an address, service or waypoint name that a
// publisher claimed and lost, or that nobody could be given.
func checkClaims(d *admin.Dump) []check {
	const fix = "find the publisher (ambient-agent peers) and correct or remove its claim; prove addresses with `ambient-agent ca issue -ip` (docs/gossip.md)"
	var out []check
	for _, c := range d.Conflicts {
		detail := fmt.Sprintf("address %s claimed by %s: %s; using %s", c.Address, c.Loser, c.Reason, c.Winner)
		switch {
		case c.Winner == "" && c.Reason == "contested":
			detail = fmt.Sprintf("address %s claimed by %s: %s; routed to no one (connections fail with CONTESTED)", c.Address, c.Loser, c.Reason)
		case c.Winner == "":
			detail = fmt.Sprintf("address %s claimed by %s: %s; not used", c.Address, c.Loser, c.Reason)
		}
		out = append(out, check{Name: "claim", Detail: detail, Fix: fix})
	}
	for _, c := range d.ServiceConflicts {
		out = append(out, check{Name: "claim", Detail: fmt.Sprintf("service %s declared by %s: %s", c.Service, c.Loser, c.What), Fix: fix})
	}
	for _, c := range d.WaypointConflicts {
		out = append(out, check{Name: "claim", Detail: fmt.Sprintf("waypoint %s on %s as %s: %s", c.Waypoint, c.Node, c.Identity, c.Reason), Fix: fix})
	}
	if len(out) == 0 {
		out = append(out, check{Name: "claims", OK: true, Detail: "no conflicting address, service or waypoint claim"})
	}
	return out
}

// checkReturnPath says whether the policy rules and routes that bring the applications' replies back to the
// agent are in place: without them, connections the agent makes from a client's address never open.
func checkReturnPath(p capture.ReturnPath, installed bool, err error, zone bool) check {
	families := "IPv4 and IPv6"
	if !capture.IPv6Usable() {
		families = "IPv4 (this host has no IPv6 on lo)"
	}
	c := check{Name: "return path", OK: installed && err == nil,
		Detail: fmt.Sprintf("iif lo fwmark 0x%x lookup %d, %s (original_source)", p.Mark, p.Table, families)}
	if !c.OK {
		c.Detail = "missing: applications cannot be reached with their real client's address (their replies are dropped)"
		if err != nil {
			c.Detail += ": " + err.Error()
		}
		c.Fix = "the agent puts it back within a second when it is deleted; if it stays missing restart the agent, or set [capture] original_source = false (a network manager that removes rules it did not make, such as systemd-networkd, may need ManageForeignRoutingPolicyRules=no)"
	} else if !zone {
		c.OK = false
		c.Detail += fmt.Sprintf("; but no table inet %s: now and then a connection from a client's address may take the port of that client's own, which is then reset", nft.ZoneTableName)
		c.Fix = "the agent creates it at start (Linux 5.12 and later; its log says why it could not); restart the agent"
	}
	return c
}

func checkKernel(err error) check {
	if err != nil {
		return check{Name: "kernel nftables", Detail: err.Error(),
			Fix: "the kernel needs nf_tables with nat (modprobe nf_tables nft_redirect); run as root or with CAP_NET_ADMIN"}
	}
	return check{Name: "kernel nftables", OK: true, Detail: "netlink answers"}
}

func checkReady(d *admin.Dump) check {
	if !d.Ready {
		return check{Name: "agent ready", Detail: "waiting for " + strings.Join(d.Waiting, ", "),
			Fix: "see journalctl -u ambient-agent for why"}
	}
	return check{Name: "agent ready", OK: true, Detail: "version " + d.Version + ", up " + d.Uptime}
}

func checkTable(d *admin.Dump, k nft.State) check {
	c := check{Name: "capture rules"}
	switch {
	case !d.Capture.Enabled:
		c.OK, c.Detail = true, "nothing is captured ([capture] enabled = false, or no [[workload]])"
	case !k.Present:
		c.Detail = "table " + d.Capture.Table + " is missing: captured traffic is not redirected"
		c.Fix = "the agent puts it back within a second of a change; missing for longer, it could not: see journalctl -u ambient-agent, and check other firewall tools"
	default:
		var missing []string
		for _, ch := range d.Capture.Chains {
			if !slices.Contains(k.Chains, ch) {
				missing = append(missing, ch)
			}
		}
		if len(missing) > 0 {
			c.Detail = fmt.Sprintf("table %s lacks chains %v", d.Capture.Table, missing)
			c.Fix = "the agent puts it back within a second of a change; see journalctl -u ambient-agent"
		} else {
			c.OK, c.Detail = true, fmt.Sprintf("table %s present with chains %v", d.Capture.Table, k.Chains)
		}
	}
	return c
}

// checkUnmeshed lists the applications other hosts reach without the agent:
// TCP listeners on an excluded port, on an unmeshed address, or (with
// inbound_addresses = "workloads") on an address that is no workload's.
// Listeners on loopback and the agent's own are left out.
func checkUnmeshed(d *admin.Dump, ls []netip.AddrPort) check {
	c := d.Config.Capture
	workload := map[netip.Addr]bool{}
	for _, w := range d.Workloads {
		for _, a := range w.Addresses {
			if w.Local {
				workload[a.Unmap()] = true
			}
		}
	}
	var found []string
	for _, l := range slices.Compact(slices.SortedFunc(slices.Values(ls), netip.AddrPort.Compare)) {
		a := l.Addr()
		switch {
		case a.IsLoopback() || isAgentPort(l.Port()):
		case slices.Contains(c.ExcludeInboundPorts, l.Port()):
			found = append(found, fmt.Sprintf("%s (port excluded)", l))
		case a.IsUnspecified() && len(c.UnmeshedAddresses) > 0:
			found = append(found, fmt.Sprintf("%s (on the unmeshed addresses %v)", l, c.UnmeshedAddresses))
		case slices.ContainsFunc(c.UnmeshedAddresses, func(p netip.Prefix) bool { return p.Contains(a) }):
			found = append(found, fmt.Sprintf("%s (address unmeshed)", l))
		case c.InboundAddresses == "workloads" && (a.IsUnspecified() || !workload[a]):
			found = append(found, fmt.Sprintf("%s (not a workload's address)", l))
		}
	}
	if len(found) == 0 {
		return check{Name: "unmeshed listeners", OK: true, Detail: "none: every listener off loopback is reached only through the agent"}
	}
	return check{Name: "unmeshed listeners", OK: true, Note: true,
		Detail: "reached from other hosts without the agent (no mTLS, no authorization): " + strings.Join(found, ", "),
		Fix:    "if that is not meant, see [capture] exclude_inbound_ports, inbound_addresses and unmeshed_addresses"}
}

// isAgentPort reports the agent's own listening ports (data path, admin, DNS,
// and the recognised workloads' outbound ports).
func isAgentPort(p uint16) bool {
	return ports.Agent(p)
}

// checkListeners looks for the agent's ports in the kernel's socket tables.
func checkListeners(d *admin.Dump) []check {
	listening := listeningPorts()
	want := []struct {
		port uint16
		role string
	}{{ports.Outbound, "outbound"}, {ports.InboundPlaintext, "inbound plaintext"}, {ports.Readiness, "readiness"}, {ports.Metrics, "metrics"}}
	if d.Config.DNS.Enabled {
		want = append(want, struct {
			port uint16
			role string
		}{ports.DNS, "DNS proxy"})
	}
	var out []check
	for _, w := range want {
		c := check{Name: fmt.Sprintf("listener %d", w.port), OK: listening[w.port], Detail: w.role}
		if !c.OK {
			c.Detail = w.role + ": nothing listens"
			c.Fix = "another process may hold the port (ss -ltnp); restart the agent"
		}
		out = append(out, c)
	}
	return out
}

func checkClock(d *admin.Dump, now time.Time) check {
	for _, c := range d.Certificates {
		if now.Before(c.NotBefore) {
			return check{Name: "clock", Detail: fmt.Sprintf("now (%s) is before certificate %s is valid (%s)", now.UTC().Format(time.RFC3339), c.Identity, c.NotBefore.UTC().Format(time.RFC3339)),
				Fix: "synchronise the clock (timedatectl set-ntp true)"}
		}
	}
	if now.Year() < 2025 {
		return check{Name: "clock", Detail: "the year is " + fmt.Sprint(now.Year()), Fix: "synchronise the clock (timedatectl set-ntp true)"}
	}
	return check{Name: "clock", OK: true, Detail: now.UTC().Format(time.RFC3339)}
}

func checkCerts(d *admin.Dump, now time.Time) []check {
	var out []check
	istio := d.Config != nil && d.Config.Identity.Source == config.SourceIstio
	for _, c := range d.Certificates {
		if c.Kind != "workload" {
			continue
		}
		out = append(out, checkCert(c, istio, now))
	}
	if len(out) == 0 {
		out = append(out, check{Name: "certificates", OK: true, Detail: "no local workload, no certificate needed"})
	}
	return out
}

// checkCert judges one workload certificate by its remaining life. The agent renews istiod's at half their
// lifetime (Istio backdates NotBefore by two minutes, so a little after): past three quarters of it, a renewal is
// overdue. Other sources' certificates are renewed outside the agent: a day is the margin.
func checkCert(c identity.CertInfo, istio bool, now time.Time) check {
	left := c.NotAfter.Sub(now)
	ck := check{Name: "certificate " + c.Identity, Detail: "expires " + until(c.NotAfter)}
	if !istio {
		ck.OK = left > 24*time.Hour
		if !ck.OK {
			ck.Fix = "renew it (ambient-agent ca issue ..., or check the SPIRE agent); the agent picks up new files by itself"
		}
		return ck
	}
	life := c.NotAfter.Sub(c.NotBefore)
	ck.Detail += fmt.Sprintf(" (a %s certificate from istiod, renewed at half its life with itself)", life.Round(time.Minute))
	ck.OK = left > life/4
	if !ck.OK {
		ck.Fix = "its renewal is overdue: is istiod reachable, and does it answer (journalctl -u ambient-agent, \"renewal from istiod failed\")? " +
			"Once it expires, only a current token in [istio] token_dir gets a new one"
	}
	return ck
}

// checkTokens reads each local identity's service-account token (without verifying it: istiod does) for what
// makes istiod refuse it: an expiry passed, an audience without istio-ca. A token is needed only for an
// identity's first certificate, or once its certificate expired (docs/interop.md): an expired one is a note
// while a valid certificate is held.
func checkTokens(d *admin.Dump, now time.Time) []check {
	held := map[string]time.Time{}
	for _, c := range d.Certificates {
		if c.Kind == "workload" {
			held[c.Identity] = c.NotAfter
		}
	}
	var out []check
	for _, id := range localIstioIdentities(d) {
		ns, sa, _ := identity.ParseIstioID(id)
		path := identity.IstioTokenPath(d.Config.Istio.TokenDir, ns, sa)
		name := "token " + id.String()
		certValid := held[id.String()].After(now)
		claims, err := readTokenClaims(path)
		switch {
		case err != nil && certValid:
			out = append(out, check{Name: name, OK: true, Note: true, Detail: err.Error() + "; not needed while the certificate is valid (renewed with itself)",
				Fix: "keep a current token there for restarts and long istiod outages"})
		case err != nil:
			out = append(out, check{Name: name, Detail: err.Error(), Fix: "place a service-account token (audience istio-ca) at " + path})
		case !slices.Contains(claims.audiences(), "istio-ca"):
			out = append(out, check{Name: name, Detail: fmt.Sprintf("audience %v, not istio-ca: istiod refuses it", claims.audiences()),
				Fix: "create it with --audience istio-ca (kubectl create token SA -n NS --audience istio-ca)"})
		case claims.Exp != 0 && time.Unix(claims.Exp, 0).Before(now):
			ck := check{Name: name, Detail: "expired " + time.Unix(claims.Exp, 0).UTC().Format(time.RFC3339),
				Fix: "refresh it before the agent restarts or the certificate expires"}
			if certValid {
				ck.OK, ck.Note = true, true
				ck.Detail += "; not needed while the certificate is valid (renewed with itself)"
			}
			out = append(out, ck)
		case claims.Exp != 0:
			out = append(out, check{Name: name, OK: true, Detail: "audience istio-ca, expires " + until(time.Unix(claims.Exp, 0))})
		default:
			out = append(out, check{Name: name, OK: true, Detail: "audience istio-ca, no expiry"})
		}
	}
	return out
}

// localIstioIdentities are the identities of the host's workloads (and waypoint), as the istio source asks for them.
func localIstioIdentities(d *admin.Dump) []spiffeid.ID {
	seen := map[spiffeid.ID]bool{}
	var out []spiffeid.ID
	for _, c := range d.Certificates {
		if id, err := spiffeid.FromString(c.Identity); err == nil && c.Kind == "workload" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// tokenClaims are the parts of a JWT's claims the checks read.
type tokenClaims struct {
	Exp int64 `json:"exp"`
	Aud any   `json:"aud"` // a string or a list of strings
}

func (c tokenClaims) audiences() []string {
	switch a := c.Aud.(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, v := range a {
			if s, ok := v.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// readTokenClaims decodes the claims of the JWT at path, unverified.
func readTokenClaims(path string) (tokenClaims, error) {
	var c tokenClaims
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("token: %w", err)
	}
	parts := strings.Split(strings.TrimSpace(string(data)), ".")
	if len(parts) != 3 {
		return c, fmt.Errorf("token %s is not a JWT (%d parts, want 3)", path, len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return c, fmt.Errorf("token %s: claims are not base64url: %v", path, err)
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return c, fmt.Errorf("token %s: claims are not JSON: %v", path, err)
	}
	return c, nil
}

// checkGossipKey reads the key file the way the agent does (base64, 32 bytes).
func checkGossipKey(path string) check {
	keys, err := discovery.ReadKeyFile(path)
	if err != nil {
		return check{Name: "gossip key", Detail: err.Error(), Fix: "create it: ambient-agent gossip keygen -out " + path}
	}
	return check{Name: "gossip key", OK: true, Detail: fmt.Sprintf("%s: %d valid key(s)", path, len(keys))}
}

func checkPeers(d *admin.Dump) check {
	alive, _ := d.Peering()
	switch {
	case alive > 0:
		return check{Name: "gossip peers", OK: true, Detail: fmt.Sprintf("%d alive", alive)}
	case len(d.Config.Gossip.Join) == 0:
		return check{Name: "gossip peers", OK: true, Detail: "none yet; this host has no seeds and waits to be joined"}
	}
	return check{Name: "gossip peers", Detail: "no peer reachable",
		Fix: "check [gossip] join, that TCP and UDP on the gossip port are open between hosts, and that every host has the same key"}
}
