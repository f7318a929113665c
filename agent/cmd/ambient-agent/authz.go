package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
)

// Exit codes of `authz check`, beyond 0 for ALLOW and 2 for bad input.
const exitDenied = 3

// checkInput is a parsed `authz check` command line.
type checkInput struct {
	dir  string
	opts policy.Options
	conn policy.Conn
}

func authzCommands() table {
	return table{name: "ambient-agent authz", cmds: map[string]command{
		"check": {"decide one connection against a policy directory: ALLOW (exit 0) or DENY (exit 3)", runAuthzCheck},
	}}
}

func runAuthzCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("authz check", "authz check -policy-dir DIR -namespace NS [-labels k=v,...] -dest IP:PORT "+
		"[-source-identity spiffe://...] [-source-ip IP] [-root-namespace NS]", stderr)
	dir := fs.String("policy-dir", "", "`directory` of AuthorizationPolicy / PeerAuthentication YAML, as [policy] dir (required)")
	namespace := fs.String("namespace", "", "the destination workload's `namespace` (required)")
	labels := fs.String("labels", "", "the destination workload's `labels`, as k=v,k2=v2")
	dest := fs.String("dest", "", "the destination workload's `IP:PORT` (the final target port) (required)")
	source := fs.String("source-identity", "", "the peer's SPIFFE `ID`; omit for a plaintext source")
	sourceIP := fs.String("source-ip", "", "the peer's `IP`; without it ipBlocks never match and notIpBlocks always do")
	root := fs.String("root-namespace", policy.DefaultRootNamespace, "Istio's root `namespace`, as [policy] root_namespace")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	in, err := checkInputFrom(*dir, *namespace, *labels, *dest, *source, *sourceIP, *root)
	if err != nil {
		return usageError(fs, err.Error())
	}
	set, warnings, err := policy.Load(in.dir, in.opts)
	if err != nil {
		var ps policy.Problems
		if errors.As(err, &ps) {
			fmt.Fprintln(stderr, ps) // a problem a line
			fmt.Fprintf(stderr, "ambient-agent authz check: %s has %d problem(s); nothing was evaluated\n", in.dir, len(ps))
		} else {
			fmt.Fprintf(stderr, "ambient-agent authz check: %v\n", err)
		}
		return 2
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	d := set.Evaluate(in.conn)
	explain(stdout, set, in.conn, d)
	if !d.Allow {
		return exitDenied
	}
	return 0
}

func checkInputFrom(dir, namespace, labels, dest, source, sourceIP, root string) (checkInput, error) {
	in := checkInput{dir: dir, opts: policy.Options{RootNamespace: root}}
	switch {
	case dir == "":
		return in, errors.New("-policy-dir is required")
	case namespace == "":
		return in, errors.New("-namespace is required")
	case dest == "":
		return in, errors.New("-dest is required")
	case root == "":
		return in, errors.New("-root-namespace must not be empty")
	}
	in.conn.DestNamespace = namespace
	ap, err := netip.ParseAddrPort(dest)
	if err != nil {
		return in, fmt.Errorf("-dest %q is not IP:PORT (use [v6]:port for IPv6)", dest)
	}
	in.conn.DestIP, in.conn.DestPort = ap.Addr().Unmap(), ap.Port()
	if in.conn.DestLabels, err = parseLabels(labels); err != nil {
		return in, err
	}
	if source != "" {
		if in.conn.SourceIdentity, err = spiffeid.FromString(source); err != nil {
			return in, fmt.Errorf("-source-identity %q is not a SPIFFE ID (spiffe://trust-domain/ns/NS/sa/SA): %v", source, err)
		}
	}
	if sourceIP != "" {
		if in.conn.SourceIP, err = netip.ParseAddr(sourceIP); err != nil {
			return in, fmt.Errorf("-source-ip %q is not an IP address", sourceIP)
		}
	}
	return in, nil
}

// parseLabels reads "k=v,k2=v2".
func parseLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return labels, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("-labels: %q is not key=value", kv)
		}
		if _, dup := labels[k]; dup {
			return nil, fmt.Errorf("-labels: %q is given twice", k)
		}
		labels[k] = v
	}
	return labels, nil
}

// explain prints the verdict, what decided it, and the policies that were considered.
func explain(w io.Writer, set *policy.Set, c policy.Conn, d policy.Decision) {
	applicable := set.Applicable(c)
	fmt.Fprintln(w, verdict(d.Allow))
	fmt.Fprintln(w, decidedBy(d.Outcome, applicable))
	if d.DryRun != nil {
		fmt.Fprintf(w, "dry-run (not enforced): %s, %s\n", verdict(d.DryRun.Allow), decidedBy(*d.DryRun, applicable))
	}
	fmt.Fprintf(w, "connection: %s\n", describeConn(c))
	if len(applicable) == 0 {
		fmt.Fprintf(w, "no policy applies to this workload (%d loaded)\n", set.Len())
		return
	}
	fmt.Fprintf(w, "policies that apply (%d of %d):\n", len(applicable), set.Len())
	for _, a := range applicable {
		dry := ""
		if a.DryRun {
			dry = " dry-run"
		}
		fmt.Fprintf(w, "  %-5s %s %s (%s%s) %s\n", a.Action, a.Kind, a.Key(), a.Scope, dry, a.Source)
	}
}

func verdict(allow bool) string {
	if allow {
		return "ALLOW"
	}
	return "DENY"
}

// decidedBy names the deciding policy and rule, with the rule spelled out.
func decidedBy(o policy.Outcome, applicable []policy.Authorization) string {
	if o.Policy == "" {
		return "decided by: no single policy: " + string(o.Reason)
	}
	s := fmt.Sprintf("decided by: %s %s, rule %d: %s", o.Kind, o.Policy, o.Rule, o.Reason)
	for _, a := range applicable {
		if a.Key() != o.Policy || a.Kind != o.Kind {
			continue
		}
		for _, r := range a.Rules {
			if r.Index == o.Rule {
				s += fmt.Sprintf("\n  rule %d: %s\n  from %s", r.Index, r.String(), a.Source)
			}
		}
	}
	return s
}

func describeConn(c policy.Conn) string {
	src := "plaintext (no identity)"
	if !c.SourceIdentity.IsZero() {
		src = c.SourceIdentity.String()
	}
	if c.SourceIP.IsValid() {
		src += " at " + c.SourceIP.String()
	}
	keys := slices.Sorted(maps.Keys(c.DestLabels))
	var labels []string
	for _, k := range keys {
		labels = append(labels, k+"="+c.DestLabels[k])
	}
	return fmt.Sprintf("%s -> %s in namespace %s {%s}", src, netip.AddrPortFrom(c.DestIP, c.DestPort), c.DestNamespace, strings.Join(labels, ","))
}
