package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
)

func runServices(args []string, stdout, stderr io.Writer) int {
	return adminCommand("services", args, stdout, stderr, func(d *admin.Dump) any { return d.Services },
		func(w io.Writer, d *admin.Dump) {
			if len(d.Services) == 0 {
				fmt.Fprintln(w, "no services: declare [[service]] tables on the hosts that back them")
				return
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVICE\tHOSTNAME\tVIPS\tPORTS\tWAYPOINT\tENDPOINTS (HEALTHY/ALL)")
			for _, s := range d.Services {
				vips := addrs(s.Addresses)
				if s.Allocated {
					vips += " (allocated)"
				}
				var ports []string
				for _, p := range s.Ports {
					ports = append(ports, fmt.Sprintf("%d->%d", p.Port, p.TargetPort))
				}
				healthy := 0
				for _, e := range s.Endpoints {
					if e.Healthy {
						healthy++
					}
				}
				fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\t%s\t%d/%d\n", s.Namespace, s.Name, s.Hostname, vips,
					strings.Join(ports, ","), orDash(s.Waypoint), healthy, len(s.Endpoints))
				for _, e := range s.Endpoints {
					state := "healthy"
					if !e.Healthy {
						state = "UNHEALTHY"
					}
					fmt.Fprintf(tw, "  %s\t%s\t%s\t\t%s\t\n", e.Workload, strings.Join(e.Addresses, ","), state, orDash(e.Waypoint))
				}
			}
			tw.Flush()
			for _, c := range d.ServiceConflicts {
				fmt.Fprintf(w, "conflict: %s\n", c)
			}
		})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
