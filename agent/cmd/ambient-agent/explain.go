package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/app"
)

func runExplain(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("explain", "explain [-socket PATH] [-json] [-from WORKLOAD] IP:PORT", stderr)
	f := newCLIFlags(fs)
	from := fs.String("from", "", "the local `workload` that connects (name, namespace/name or SPIFFE ID; default: the first)")
	pos, code := parseFlagsArgs(fs, args, stdout, 1)
	if code >= 0 {
		return code
	}
	if len(pos) == 0 {
		fmt.Fprintln(stderr, "ambient-agent explain: which destination? give IP:PORT, as an application would connect to it")
		fs.Usage()
		return 2
	}
	q := url.Values{"destination": {pos[0]}}
	if *from != "" {
		q.Set("from", *from)
	}
	body, err := controlCall(*f.socket, http.MethodGet, "/explain?"+q.Encode(), 10*time.Second)
	if err != nil {
		return failed(stderr, "explain", err)
	}
	var r app.ExplainResult
	if err := json.Unmarshal(body, &r); err != nil {
		return failed(stderr, "explain", fmt.Errorf("control API: bad /explain answer: %w", err))
	}
	if *f.asJSON {
		if err := printJSON(stdout, r); err != nil {
			return failed(stderr, "explain", err)
		}
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Connection:\t%s -> %s\n", dash(r.From), r.Destination)
	fmt.Fprintf(tw, "Presents:\t%s\n", orText(r.SourceIdentity, "no identity"))
	if r.Service != "" {
		fmt.Fprintf(tw, "Service:\t%s\n", r.Service)
		for _, ep := range r.Endpoints {
			fmt.Fprintf(tw, "  endpoint:\t%s\n", ep)
		}
	}
	if r.Waypoint != "" {
		fmt.Fprintf(tw, "Waypoint:\t%s\n", r.Waypoint)
	}
	if r.Workload != "" {
		where := "node " + orText(r.Node, "unknown")
		if r.Local {
			where = "this host"
		}
		fmt.Fprintf(tw, "Destination:\t%s (%s)\n", r.Workload, where)
	}
	route := r.Route
	switch r.Route {
	case "hbone":
		route = fmt.Sprintf("HBONE to %s, CONNECT %s", r.Gateway, r.Target)
		if r.ServerName != "" {
			route += ", SNI " + r.ServerName
		}
	case "plaintext":
		route = "plaintext to " + r.Target + " (the destination is not in the mesh's HBONE)"
	case "passthrough":
		route = "passthrough: not a mesh destination, connected as if not captured"
	case "drop":
		route = "DROPPED: " + r.Reason
	}
	fmt.Fprintf(tw, "Route:\t%s\n", route)
	if len(r.Expected) > 0 {
		fmt.Fprintf(tw, "Peer must be:\t%s\n", strings.Join(r.Expected, " or "))
	}
	if p := r.Policy; p != nil {
		verdict := p.Verdict + ": " + p.Reason
		if p.Policy != "" {
			verdict += fmt.Sprintf(" (%s, rule %d)", p.Policy, p.Rule)
		}
		fmt.Fprintf(tw, "Authorization:\t%s, as %s\n", verdict, orText(p.AsSeenBy, "a plaintext client"))
		if p.DryRun != "" {
			fmt.Fprintf(tw, "  dry-run:\t%s\n", p.DryRun)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(tw, "Note:\t%s\n", n)
	}
	tw.Flush()
	return 0
}

func orText(s, none string) string {
	if s == "" {
		return none
	}
	return s
}
