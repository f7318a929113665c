package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// policyView is the part of a policy summary `policies` shows.
type policyView struct {
	Name         string `json:"name"`
	Namespace    string `json:"namespace"`
	Kind         string `json:"kind"`
	Scope        string `json:"scope"`
	Action       string `json:"action"`
	Rules        int    `json:"rules"`
	DroppedRules int    `json:"droppedRules"`
	DryRun       bool   `json:"dryRun"`
	Enforced     bool   `json:"enforced"`
	MTLSMode     string `json:"mtlsMode"`
}

func runPolicies(args []string, stdout, stderr io.Writer) int {
	return adminCommand("policies", args, stdout, stderr, func(d *dumpView) any { return d.Policies },
		func(w io.Writer, d *dumpView) {
			var ps []policyView
			if err := json.Unmarshal(d.Policies, &ps); err != nil {
				fmt.Fprintf(w, "bad policy list: %v\n", err)
				return
			}
			if len(ps) == 0 {
				fmt.Fprintln(w, "no policies: every connection is allowed")
				return
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAMESPACE\tNAME\tKIND\tSCOPE\tACTION\tRULES\tENFORCED")
			for _, p := range ps {
				action := p.Action
				if p.MTLSMode != "" {
					action = "mtls " + p.MTLSMode
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
