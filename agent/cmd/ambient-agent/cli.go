package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// cliFlags are the flags every control-API command shares.
type cliFlags struct {
	socket *string
	asJSON *bool
}

// socketEnv names the control socket for the CLI when -socket is not given:
// for hosts that run several agents (one per network namespace).
const socketEnv = "AMBIENT_AGENT_SOCKET"

func newCLIFlags(fs *flag.FlagSet) cliFlags {
	return cliFlags{
		socket: socketFlag(fs),
		asJSON: fs.Bool("json", false, "print JSON instead of text"),
	}
}

// socketFlag is the -socket flag: the agent's control socket ([admin] socket).
func socketFlag(fs *flag.FlagSet) *string {
	def := config.DefaultControlSocket
	if v := os.Getenv(socketEnv); v != "" {
		def = v
	}
	return fs.String("socket", def, "the agent's control `socket` ([admin] socket; default from $"+socketEnv+")")
}

// controlClient speaks HTTP to the agent's control socket.
func controlClient(socket string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
	}}
}

func fetchDump(socket string) (*admin.Dump, []byte, error) {
	body, err := controlCall(socket, http.MethodGet, "/config_dump", 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	var d admin.Dump
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, nil, fmt.Errorf("control API: bad /config_dump: %w", err)
	}
	return &d, body, nil
}

// adminCommand runs a command that reads the dump and prints it as text, or
// prints the JSON of view(d) with -json.
func adminCommand(name string, args []string, stdout, stderr io.Writer, view func(*admin.Dump) any, text func(io.Writer, *admin.Dump)) int {
	return adminCommandExit(name, args, stdout, stderr, view, text, nil)
}

// adminCommandExit is adminCommand whose exit code, once the dump was printed, is
// exit(d) (nil: 0).
func adminCommandExit(name string, args []string, stdout, stderr io.Writer, view func(*admin.Dump) any,
	text func(io.Writer, *admin.Dump), exit func(*admin.Dump) int) int {
	fs := newFlags(name, name+" [-socket PATH] [-json]", stderr)
	f := newCLIFlags(fs)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	d, _, err := fetchDump(*f.socket)
	if err != nil {
		fmt.Fprintf(stderr, "ambient-agent %s: %v\n", name, err)
		return 1
	}
	if *f.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(view(d)); err != nil {
			return failed(stderr, name, err)
		}
	} else {
		text(stdout, d)
	}
	if exit != nil {
		return exit(d)
	}
	return 0
}

// addrs joins addresses with commas.
func addrs(as []netip.Addr) string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return strings.Join(out, ",")
}

// workloadID is a workload's SPIFFE ID, or what is wrong with it.
func workloadID(w *state.Workload) string {
	id, err := w.Identity()
	if err != nil {
		return "invalid: " + err.Error()
	}
	return id.String()
}

// failed reports the error of command cmd ("ca issue") and returns its exit code, 1.
func failed(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "ambient-agent %s: %v\n", cmd, err)
	return 1
}

func until(t time.Time) string {
	d := time.Until(t)
	if d < 0 {
		return "EXPIRED " + (-d).Round(time.Minute).String() + " ago"
	}
	if d > 48*time.Hour {
		return fmt.Sprintf("in %dd", int(d.Hours()/24))
	}
	return "in " + d.Round(time.Minute).String()
}
