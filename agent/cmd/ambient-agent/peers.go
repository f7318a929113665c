package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
)

func runPeers(args []string, stdout, stderr io.Writer) int {
	return adminCommand("peers", args, stdout, stderr, func(d *admin.Dump) any { return d.Peers },
		func(w io.Writer, d *admin.Dump) {
			if !d.Config.Gossip.Enabled {
				fmt.Fprintln(w, "gossip is off ([gossip] enabled = false): no peers")
				return
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tADDRESS\tSTATE\tWORKLOADS\tAGENT\tSINCE")
			for _, p := range d.Peers {
				since := "-"
				if !p.Since.IsZero() {
					since = time.Since(p.Since).Round(time.Second).String() + " ago"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", p.Name, p.Address, p.State, p.Workloads, p.AgentVersion, since)
			}
			tw.Flush()
		})
}
