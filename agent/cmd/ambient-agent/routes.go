package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
)

func runRoutes(args []string, stdout, stderr io.Writer) int {
	return adminCommand("routes", args, stdout, stderr, func(d *admin.Dump) any { return d.Routes },
		func(w io.Writer, d *admin.Dump) {
			if len(d.Routes) == 0 {
				fmt.Fprintln(w, "no routes: put HTTPRoute or GRPCRoute objects in the policy directory (docs/waypoint.md)")
				return
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ROUTE\tPARENTS\tBACKENDS\tACCEPTED\tSOURCE")
			for _, r := range d.Routes {
				accepted := "yes"
				if !r.Accepted {
					accepted = "NO"
				}
				fmt.Fprintf(tw, "%s %s/%s\t%s\t%s\t%s\t%s\n", r.Kind, r.Namespace, r.Name, orDash(strings.Join(r.Parents, ",")),
					orDash(strings.Join(r.Backends, ",")), accepted, r.Source)
			}
			tw.Flush()
			for _, r := range d.Routes {
				for _, reason := range r.Reasons {
					fmt.Fprintf(w, "%s %s/%s: %s\n", r.Kind, r.Namespace, r.Name, reason)
				}
			}
		})
}
