// Command ambient-agent is the host agent of an Istio ambient mesh: the ztunnel of
// a VM. main stays thin: it parses the command line and hands over to the app.
package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
)

// command is one subcommand: it gets its arguments (without its name) and
// returns the process exit code: 0 ok, 1 failure, 2 wrong usage.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

// subtables are the commands of subcommands (ca init, ca issue), whose run dispatches to their own table.
var subtables = map[string]func() table{
	"ambient-agent ca": caCommands, "ambient-agent authz": authzCommands,
	"ambient-agent gossip": gossipCommands, "ambient-agent export": exportCommands,
	"ambient-agent join": joinCommands,
}

// table is a set of subcommands under one name: the program's, or a command's
// own (ca init, ca issue). Every level dispatches, answers -h and prints its
// usage the same way.
type table struct {
	name string // "ambient-agent", "ambient-agent ca", ...
	noun string // what the first argument names: "command" (the default) or "kind"
	cmds map[string]command
}

func commands() table {
	return table{name: "ambient-agent", cmds: map[string]command{
		"run":         {"run the agent (the daemon)", runDaemon},
		"validate":    {"check a configuration file and print ok or every problem", runValidate},
		"cleanup":     {"remove the agent's nftables table: this opens the host", runCleanup},
		"close":       {"install the capture table if none is there, so the host is closed until the agent runs (at boot)", runClose},
		"ca":          {"the built-in offline mesh CA: ca init, ca issue", caCommands().run},
		"version":     {"print the version", runVersion},
		"authz":       {"explain an authorization decision: authz check ...", authzCommands().run},
		"gossip":      {"gossip helpers: gossip keygen", gossipCommands().run},
		"status":      {"show whether the local agent is ready, and why not", runStatus},
		"workloads":   {"list the workloads the local agent knows", runWorkloads},
		"certs":       {"list the certificates the local agent holds (never keys)", runCerts},
		"policies":    {"list the authorization policies the local agent enforces", runPolicies},
		"peers":       {"list the gossip peers the local agent sees", runPeers},
		"services":    {"list the mesh services, their VIPs, endpoints and waypoints", runServices},
		"routes":      {"list the Gateway API routes the waypoint applies, and what is not used of them", runRoutes},
		"doctor":      {"check this host's setup and say what is wrong and how to fix it", runDoctor},
		"connections": {"list the open connections the local agent carries", runConnections},
		"probe":       {"check a peer's HBONE port: TLS with a local identity, the peer's identity, HTTP/2", runProbe},
		"explain":     {"say what the agent would do with a connection to IP:PORT: route, waypoint, peer identity, authorization", runExplain},
		"bugreport":   {"gather the agent's state, the host's capture rules and the journal into one tar.gz for a support request", runBugreport},
		"log-level":   {"show or change the running agent's log level (debug, info, warn, error)", runLogLevel},
		"export":      {"print this host's workloads and services as Kubernetes objects (export kubernetes)", exportCommands().run},
		"join":        {"configure this host to join a cluster from its onboarding files (join istio)", joinCommands().run},
		"completion":  {"print the shell completion script: completion bash|zsh|fish (the packages install them)", runCompletion},
		"help":        {"show this help", runHelp},
	}}
}

func main() {
	os.Exit(commands().run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches args to the subcommand their first element names.
func (t table) run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "%s: which %s? one of %s\n", t.name, t.nounOr(), t.names())
		t.usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		t.usage(stdout)
		return 0
	}
	cmd, ok := t.cmds[args[0]]
	if !ok && args[0] == "help" { // "ca help": what -h says
		t.usage(stdout)
		return 0
	}
	if !ok {
		fmt.Fprintf(stderr, "%s: unknown %s %q; one of %s\n", t.name, t.nounOr(), args[0], t.names())
		t.usage(stderr)
		return 2
	}
	return cmd.run(args[1:], stdout, stderr)
}

// usage lists the subcommands, sorted, with their summaries.
func (t table) usage(w io.Writer) {
	noun := t.nounOr()
	fmt.Fprintf(w, "usage: %s <%s> [flags]\n\n%ss:\n", t.name, noun, noun)
	for _, n := range t.sorted() {
		fmt.Fprintf(w, "  %-10s %s\n", n, t.cmds[n].summary)
	}
	fmt.Fprintf(w, "\nRun '%s <%s> -h' for its flags.\n", t.name, noun)
}

func (t table) sorted() []string {
	return slices.Sorted(maps.Keys(t.cmds))
}

// names lists the subcommands, quoted, for an error.
func (t table) names() string {
	quoted := make([]string, 0, len(t.cmds))
	for _, n := range t.sorted() {
		quoted = append(quoted, strconv.Quote(n))
	}
	return strings.Join(quoted, ", ")
}

func (t table) nounOr() string {
	if t.noun == "" {
		return "command"
	}
	return t.noun
}

func runHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && args[0] == "-man" { // the man page, generated (packaging/ambient-agent.8)
		writeMan(stdout, docs(commands(), nil))
		return 0
	}
	if len(args) > 0 {
		if cmd, ok := commands().cmds[args[0]]; ok && args[0] != "help" {
			return cmd.run([]string{"-h"}, stdout, stderr)
		}
		fmt.Fprintf(stderr, "ambient-agent help: unknown command %q\n", args[0])
		return 2
	}
	commands().usage(stdout)
	return 0
}
