package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ambient-agent/ambient-agent/ports"
)

// manText is what the man page says of a command beyond its summary (plain text; paragraphs separated by a blank
// line). Commands not here get their summary.
var manText = map[string]string{
	"run": `Run the agent in the foreground (what the service runs). SIGHUP reloads the configuration; a bad file is ` +
		`rejected and the running configuration stays. SIGTERM drains connections and exits. An agent started while ` +
		`another runs with the same configuration takes over its sockets and capture table; the other stops accepting ` +
		`and drains what it holds (node.handoff_drain_timeout), so a restart or an upgrade drops no connection.

With -keep-capture, as the service runs it, the capture table outlives the process: captured connections are ` +
		`refused until an agent runs again, unless systemd is stopping the service. With -supervise, as the service ` +
		`runs it, the agent runs as a worker process of a supervisor that holds no connection: a restart of the ` +
		`service ends the supervisor only, and the next start's agent takes over from the running one; SIGHUP when ` +
		`the binary on disk changed starts the new binary beside the running agent, which it takes over from.`,
	"validate": `Check a configuration file and the policies it names; print ok, or every problem with its file, line ` +
		`and key, and exit 1.`,
	"cleanup": `Remove the agent's nftables table: this opens the host. Refused while an agent runs, unless -force. The ` +
		`service runs it with -after-stop whenever the agent stops; it then removes the table only when systemd is ` +
		`stopping the service.`,
	"close": `Install the capture table from the configuration if there is none, so the host is closed until the ` +
		`agent runs; ambient-agent-close.service runs it at boot.`,
	"ca issue": `Issue a workload certificate into the layout the agent reads (the [identity] dir). -ip (repeatable) ` +
		`also puts the address in the certificate's IP SANs; agents then accept gossip claims of a workload's ` +
		`addresses only for those addresses.`,
	"status": `Ask the running agent whether it is ready and why not, over its control socket (root or the group ` +
		`ambient-agent). Exit status 3 when it answers but is not ready.`,
	"routes": `List the Gateway API routes (HTTPRoute, GRPCRoute) of the policy directory that the waypoint applies ` +
		`at L7: their parent services, backends, whether they are accepted, and every part that is not used or ` +
		`does not resolve (docs/waypoint.md).`,
	"connections": `List the connections the running agent carries now: direction, client and destination, route ` +
		`(hbone, plaintext, passthrough), identities, service, age and bytes each way.`,
	"probe": `Check a peer's HBONE port as a tunnel would start, without carrying anything: TCP from the agent's ` +
		`marked socket, TLS 1.3 with a local workload's certificate (-as), the peer's SPIFFE identity verified ` +
		`against the trust bundle (or -expect), ALPN h2, and the peer's HTTP/2 SETTINGS. ADDRESS is the peer's IP ` +
		`(IP:` + strconv.Itoa(ports.HBONE) + ` is accepted; no other port: the probe's socket passes the capture rules, so it scans nothing). At ` +
		`most 4 probes run at once. Prints each step and its time; exits 1 naming the step that failed.`,
	"log-level": `Show the running agent's log level, or set it to LEVEL (debug, info, warn, error) until the next ` +
		`restart.`,
	"explain": `Say what the running agent would do now with a connection from a local workload (-from) to IP:PORT, ` +
		`without opening it: the identity presented, the service and its endpoints, the waypoint, the route (HBONE ` +
		`to which peer with which :authority and SNI, plaintext, passthrough, or dropped and why), the identities the ` +
		`peer must present, and the authorization verdict at the destination with the deciding policy and rule, as ` +
		`this host's policy set says.`,
	"bugreport": `Write one tar.gz (mode 0600) for a support request: version, status, the configuration dump, open ` +
		`connections, doctor's checklist, goroutines and metrics from the running agent; the agent's nftables tables, ` +
		`policy rules and the service's journal from the host; the configuration file. Key and token files are never ` +
		`read. What cannot be collected is listed in errors.txt inside; the report is written anyway.`,
	"completion": `Print the completion script of a shell. The packages install them: ` +
		`/usr/share/bash-completion/completions/ambient-agent, /usr/share/zsh/vendor-completions/_ambient-agent and ` +
		`/usr/share/fish/vendor_completions.d/ambient-agent.fish.`,
}

// roff escapes plain text for a man page.
func roff(s string) string {
	s = strings.NewReplacer(`\`, `\\`, "-", `\-`).Replace(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func writeMan(w io.Writer, ds []cmdDoc) {
	fmt.Fprint(w, `.\" Generated by "ambient-agent help -man" from the command table: do not edit (make generate).
.TH AMBIENT-AGENT 8 "" "ambient-agent" "System Administration"
.SH NAME
ambient-agent \- Istio ambient mesh agent for hosts (the ztunnel of a VM)
.SH SYNOPSIS
.B ambient-agent
.I command
.RI [ flags ]
.SH DESCRIPTION
.B ambient-agent
makes a VM or bare-metal host a member of an Istio ambient mesh.
It captures the traffic of the host's workloads with nftables (table
.BR "inet ambient_agent" ),
carries it over HBONE (HTTP/2 CONNECT over mutual TLS with SPIFFE identities),
and enforces Istio L4 authorization policy on inbound connections.
It is configured by one TOML file and runs as the systemd service
.BR ambient-agent.service .
Commands that ask the running agent (status, workloads, services, peers, certs, policies,
connections, probe, log-level) use its control socket: root or the group ambient-agent.
.SH COMMANDS
`)
	for _, d := range ds {
		fmt.Fprintf(w, ".TP\n.B %s\n", roff("ambient-agent "+d.synopsis))
		text := manText[d.name()]
		if text == "" {
			text = strings.ToUpper(d.summary[:1]) + d.summary[1:] + "."
		}
		for i, para := range strings.Split(text, "\n\n") {
			if i > 0 {
				fmt.Fprint(w, ".IP\n")
			}
			fmt.Fprintln(w, roff(para))
		}
		if len(d.flags) > 0 {
			fmt.Fprint(w, ".RS\n")
			for _, f := range d.flags {
				fmt.Fprintf(w, ".TP\n.B %s", roff("-"+f.name))
				if f.value != "" {
					fmt.Fprintf(w, " \\fI%s\\fR", roff(f.value))
				}
				fmt.Fprintf(w, "\n%s\n", roff(f.usage))
			}
			fmt.Fprint(w, ".RE\n")
		}
	}
	fmt.Fprint(w, `.SH FILES
.TP
.I /run/ambient-agent/control.sock
The control API (/config_dump, /connections, /probe, /logging, /debug/pprof/, /quitquitquit), mode 0660.
.TP
.I /etc/ambient-agent/config.toml
The configuration; every key is documented in the shipped file.
.TP
.I /etc/ambient-agent/identity/
Certificates and keys of the local workloads (root-cert.pem,
.IR namespace / service-account /cert-chain.pem " and " key.pem ),
readable by the user ambient-agent.
.SH EXIT STATUS
0 on success; 1 on failure (the reason on standard error); 2 on wrong usage (the usage on standard error);
3 from
.B status
when the agent answers but is not ready.
.B \-h
prints a command's usage on standard output and exits 0.
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1),
.BR nft (8);
/usr/share/doc/ambient-agent/install.md.gz
`)
}
