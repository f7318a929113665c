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
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/xds"
)

// dumpView is the part of /config_dump the host CLI reads.
type dumpView struct {
	Version string   `json:"version"`
	Uptime  string   `json:"uptime"`
	Ready   bool     `json:"ready"`
	Waiting []string `json:"waitingFor"`
	Config  struct {
		Node struct {
			Name        string `json:"name"`
			TrustDomain string `json:"trustDomain"`
		} `json:"node"`
		DNS struct {
			Enabled bool `json:"enabled"`
		} `json:"dns"`
		Capture struct {
			ExcludeInboundPorts []uint16       `json:"excludeInboundPorts"`
			InboundAddresses    string         `json:"inboundAddresses"`
			UnmeshedAddresses   []netip.Prefix `json:"unmeshedAddresses"`
		} `json:"capture"`
		Gossip struct {
			Enabled bool     `json:"enabled"`
			KeyFile string   `json:"keyFile"`
			Join    []string `json:"join"`
		} `json:"gossip"`
	} `json:"config"`
	Certificates []certView        `json:"certificates"`
	Workloads    []workloadView    `json:"workloads"`
	Recognition  map[string]string `json:"recognition"`
	Conflicts    []struct {
		Address string `json:"address"`
		Winner  string `json:"winner"`
		Loser   string `json:"loser"`
		Reason  string `json:"reason"`
	} `json:"conflicts"`
	Services          []serviceView   `json:"services"`
	ServiceConflicts  json.RawMessage `json:"serviceConflicts"`
	WaypointConflicts []struct {
		Waypoint string `json:"waypoint"`
		Node     string `json:"node"`
		Identity string `json:"identity"`
		Reason   string `json:"reason"`
	} `json:"waypointConflicts"`
	Waypoints []struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"waypoints"`
	GossipRejected map[string]uint64 `json:"gossipRejected"`
	Policies       json.RawMessage   `json:"policies"`
	Peers          json.RawMessage   `json:"peers"`
	Istiod         *xds.Status       `json:"istiod"`
	Capture        struct {
		Enabled   bool     `json:"enabled"`
		Installed bool     `json:"installed"`
		Table     string   `json:"table"`
		Chains    []string `json:"chains"`
	} `json:"capture"`
}

type certView struct {
	Kind      string    `json:"kind"`
	Identity  string    `json:"identity"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
}

type workloadView struct {
	UID            string            `json:"uid"`
	Name           string            `json:"name"`
	Namespace      string            `json:"namespace"`
	ServiceAccount string            `json:"serviceAccount"`
	TrustDomain    string            `json:"trustDomain"`
	Addresses      []string          `json:"addresses"`
	Ports          []uint16          `json:"ports"`
	Node           string            `json:"node"`
	Tunnel         string            `json:"tunnelProtocol"`
	Healthy        bool              `json:"healthy"`
	Local          bool              `json:"local"`
	Labels         map[string]string `json:"labels"`
	UseWaypoint    string            `json:"useWaypoint"`
}

func (w workloadView) identity() string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", w.TrustDomain, w.Namespace, w.ServiceAccount)
}

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

func fetchDump(socket string) (*dumpView, []byte, error) {
	resp, err := controlClient(socket, 5*time.Second).Get("http://localhost/config_dump")
	if err != nil {
		return nil, nil, fmt.Errorf("the agent's control socket %s does not answer (is the agent running, and are you root or in its group? systemctl status ambient-agent): %w", socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("admin API: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("admin API: %s", resp.Status)
	}
	var d dumpView
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, nil, fmt.Errorf("admin API: bad /config_dump: %w", err)
	}
	return &d, body, nil
}

// adminCommand runs a command that reads the dump and prints it as text, or
// prints the JSON of view(d) with -json.
func adminCommand(name string, args []string, stdout, stderr io.Writer, view func(*dumpView) any, text func(io.Writer, *dumpView)) int {
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
			return 1
		}
		return 0
	}
	text(stdout, d)
	return 0
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
