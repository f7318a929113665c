package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
)

func runPolicies(args []string, stdout, stderr io.Writer) int {
	return adminCommand("policies", args, stdout, stderr, func(d *admin.Dump) any { return d.Policies },
		func(w io.Writer, d *admin.Dump) {
			ps := d.Policies
			if len(ps) == 0 {
				fmt.Fprintln(w, "no policies: every connection is allowed")
				return
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAMESPACE\tNAME\tKIND\tSCOPE\tACTION\tRULES\tENFORCED")
			for _, p := range ps {
				action := string(p.Action)
				if p.MTLSMode != "" {
					action = "mtls " + string(p.MTLSMode)
				}
				if p.DryRun {
					action += " (dry-run)"
				}
				rules := fmt.Sprint(p.Rules)
				if p.DroppedRules > 0 {
					rules += fmt.Sprintf(" (%d dropped: L7)", p.DroppedRules)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\n", p.Namespace, p.Name, p.Kind, p.Scope, action, rules, p.Enforced)
			}
			tw.Flush()
		})
}
