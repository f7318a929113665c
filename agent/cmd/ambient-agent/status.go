package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
)

// exitNotReady is status's exit code for an agent that answers but is not ready (as systemctl is-active's 3).
const exitNotReady = 3

func runStatus(args []string, stdout, stderr io.Writer) int {
	return adminCommandExit("status", args, stdout, stderr, func(d *admin.Dump) any {
		return map[string]any{
			"ready": d.Ready, "waitingFor": d.Waiting, "version": d.Version, "uptime": d.Uptime,
			"node": d.Config.Node.Name, "certificates": d.Certificates, "capture": d.Capture,
			"workloads": len(d.Workloads),
		}
	}, printStatus, func(d *admin.Dump) int {
		if !d.Ready {
			return exitNotReady
		}
		return 0
	})
}

func printStatus(w io.Writer, d *admin.Dump) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Ready:\t%s\nVersion:\t%s\nUptime:\t%s\n", readiness(d), d.Version, d.Uptime)
	fmt.Fprintf(tw, "Node:\t%s (trust domain %s)\n", d.Config.Node.Name, d.Config.Node.TrustDomain)
	fmt.Fprintf(tw, "Capture:\t%s\n", captureState(d.Capture))
	local, remote := countWorkloads(d)
	fmt.Fprintf(tw, "Workloads:\t%d local, %d known elsewhere\n", local, remote)
	if d.Config.Gossip.Enabled {
		alive, known := d.Peering()
		fmt.Fprintf(tw, "Peers:\t%d alive of %d known (gossip)\n", alive, known)
	}
	printIdentities(tw, d)
	printConflicts(tw, d)
	tw.Flush()
}

func readiness(d *admin.Dump) string {
	if !d.Ready {
		return "NO: waiting for " + strings.Join(d.Waiting, ", ")
	}
	return "yes"
}

func captureState(c admin.Capture) string {
	switch {
	case !c.Enabled:
		return "off"
	case !c.Installed:
		return "NOT INSTALLED (" + c.Table + ")"
	}
	return "on (" + c.Table + ")"
}

func countWorkloads(d *admin.Dump) (local, remote int) {
	for _, wl := range d.Workloads {
		if wl.Local {
			local++
		} else {
			remote++
		}
	}
	return local, remote
}

// printIdentities lists the local identities and when their certificates expire.
func printIdentities(w io.Writer, d *admin.Dump) {
	for _, c := range d.Certificates {
		if c.Kind == "workload" {
			fmt.Fprintf(w, "Identity:\t%s (expires %s)\n", c.Identity, until(c.NotAfter))
		}
	}
}

// printConflicts lists the addresses claimed by more than one workload.
func printConflicts(w io.Writer, d *admin.Dump) {
	for _, c := range d.Conflicts {
		if c.Winner == "" {
			fmt.Fprintf(w, "Conflict:\t%s claimed by %s (%s); routed to no one\n", c.Address, c.Loser, c.Reason)
			continue
		}
		fmt.Fprintf(w, "Conflict:\t%s claimed by %s and %s (%s); using %s\n", c.Address, c.Winner, c.Loser, c.Reason, c.Winner)
	}
}

func runWorkloads(args []string, stdout, stderr io.Writer) int {
	return adminCommand("workloads", args, stdout, stderr, func(d *admin.Dump) any { return d.Workloads },
		func(w io.Writer, d *admin.Dump) {
			expiry := map[string]string{}
			for _, c := range d.Certificates {
				expiry[c.Identity] = until(c.NotAfter)
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAMESPACE\tNAME\tWHERE\tADDRESSES\tTUNNEL\tIDENTITY\tCERT EXPIRES\tRECOGNISED BY")
			for _, wl := range d.Workloads {
				where, exp, how := wl.Node, "-", "-"
				if wl.Local {
					where = "local"
					if e, ok := expiry[workloadID(wl)]; ok {
						exp = e
					}
					if r, ok := d.Recognition[wl.UID]; ok {
						how = r
					}
				}
				at := addrs(wl.Addresses)
				if len(wl.Ports) > 0 {
					at += fmt.Sprintf(" ports %v", wl.Ports)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", wl.Namespace, wl.Name, where,
					at, wl.Tunnel, workloadID(wl), exp, how)
			}
			tw.Flush()
		})
}

func runCerts(args []string, stdout, stderr io.Writer) int {
	return adminCommand("certs", args, stdout, stderr, func(d *admin.Dump) any { return d.Certificates },
		func(w io.Writer, d *admin.Dump) {
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tIDENTITY\tSERIAL\tNOT AFTER\tEXPIRES")
			for _, c := range d.Certificates {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Kind, c.Identity, c.Serial, c.NotAfter.UTC().Format("2006-01-02 15:04Z"), until(c.NotAfter))
			}
			tw.Flush()
		})
}
