package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

type peerView struct {
	Name          string    `json:"name"`
	Address       string    `json:"address"`
	State         string    `json:"state"`
	Since         time.Time `json:"since"`
	RecordVersion uint64    `json:"recordVersion"`
	Workloads     int       `json:"workloads"`
	AgentVersion  string    `json:"agentVersion"`
}

func runPeers(args []string, stdout, stderr io.Writer) int {
	return adminCommand("peers", args, stdout, stderr, func(d *dumpView) any { return d.Peers },
		func(w io.Writer, d *dumpView) {
			var ps []peerView
			if len(d.Peers) > 0 && string(d.Peers) != "null" {
				if err := json.Unmarshal(d.Peers, &ps); err != nil {
					fmt.Fprintf(w, "bad peer list: %v\n", err)
					return
				}
			}
			if !d.Config.Gossip.Enabled {
				fmt.Fprintln(w, "gossip is off ([gossip] enabled = false): no peers")
				return
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tADDRESS\tSTATE\tWORKLOADS\tAGENT\tSINCE")
			for _, p := range ps {
				since := "-"
				if !p.Since.IsZero() {
					since = time.Since(p.Since).Round(time.Second).String() + " ago"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", p.Name, p.Address, p.State, p.Workloads, p.AgentVersion, since)
			}
			tw.Flush()
		})
}
