// Command ambient-agent is the host agent of an Istio ambient mesh: the ztunnel of
// a VM. main stays thin: it parses the command line and hands over to the app.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
)

// command is one subcommand: it gets its arguments (without its name) and
// returns the process exit code: 0 ok, 1 failure, 2 wrong usage.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() map[string]command {
	return map[string]command{
		"run":       {"run the agent (the daemon)", runDaemon},
		"validate":  {"check a configuration file and print ok or every problem", runValidate},
		"cleanup":   {"remove the agent's nftables table: this opens the host", runCleanup},
		"close":     {"install the capture table if none is there, so the host is closed until the agent runs (at boot)", runClose},
		"ca":        {"the built-in offline mesh CA: ca init, ca issue", runCA},
		"version":   {"print the version", runVersion},
		"authz":     {"explain an authorization decision: authz check ...", runAuthz},
		"gossip":    {"gossip helpers: gossip keygen", runGossip},
		"status":    {"show whether the local agent is ready, and why not", runStatus},
		"workloads": {"list the workloads the local agent knows", runWorkloads},
		"certs":     {"list the certificates the local agent holds (never keys)", runCerts},
		"policies":  {"list the authorization policies the local agent enforces", runPolicies},
		"peers":     {"list the gossip peers the local agent sees", runPeers},
		"services":  {"list the mesh services, their VIPs, endpoints and waypoints", runServices},
		"doctor":    {"check this host's setup and say what is wrong and how to fix it", runDoctor},
		"export":    {"print this host's workloads and services as Kubernetes objects (export kubernetes)", runExport},
		"help":      {"show this help", runHelp},
	}
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	}
	cmd, ok := commands()[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "ambient-agent: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	return cmd.run(args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: ambient-agent <command> [flags]")
	fmt.Fprintln(w, "\ncommands:")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'ambient-agent <command> -h' for the flags of a command.")
}

func runHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if cmd, ok := commands()[args[0]]; ok && args[0] != "help" {
			return cmd.run([]string{"-h"}, stdout, stderr)
		}
		fmt.Fprintf(stderr, "ambient-agent help: unknown command %q\n", args[0])
		return 2
	}
	usage(stdout)
	return 0
}
