package lab

import (
	"fmt"
	"net/netip"
	"strings"
)

// AgentConfig is the configuration of a lab host's agent, rendered as TOML by String: [node] named after the
// host, [identity] in the host's certificate directory, [gossip] when Gossip is set, [capture] when Capture is,
// the host's own [[workload]] entries and its peers' [[remote_workload]], and Tables, the scenario's own TOML.
type AgentConfig struct {
	Host *Host
	// DrainTimeout is [node] drain_timeout ("2s" when empty); Node are more [node] keys, as TOML lines.
	DrainTimeout string
	Node         string
	// Gossip turns gossip on (nil: off).
	Gossip *Gossip
	// Capture are [capture] keys, as TOML lines ("": the defaults).
	Capture   string
	Workloads []Workload
	Remote    []Remote
	// Tables is more TOML, whole tables only ([policy], [[service]], [log], ...): it comes last.
	Tables string
}

// Gossip is the [gossip] table: the key file the lab's hosts share, and the seed they join (none when Seed is
// nil or the host itself).
type Gossip struct {
	KeyFile string
	Seed    *Host
	// Keys are more [gossip] keys, as TOML lines.
	Keys string
}

// Workload is one [[workload]] of the host; Keys are more of its keys, as TOML lines.
type Workload struct {
	Name, ServiceAccount string
	Addresses            []netip.Addr
	Keys                 string
}

// Remote is one [[remote_workload]] declared statically.
type Remote struct {
	Name, ServiceAccount, Node string
	Addresses                  []netip.Addr
}

// App is the workload "app-<host>" at the host's address, with service account sa ("": the default).
func (h *Host) App(sa string) Workload {
	return Workload{Name: "app-" + h.Name, ServiceAccount: sa, Addresses: []netip.Addr{h.Addr}}
}

// RemoteApp is the workload "app-<host>" of another host, as a peer declares it.
func (h *Host) RemoteApp(sa string) Remote {
	return Remote{Name: "app-" + h.Name, ServiceAccount: sa, Node: h.Name, Addresses: []netip.Addr{h.Addr}}
}

// String renders the configuration as TOML.
func (c AgentConfig) String() string {
	var b strings.Builder
	drain := c.DrainTimeout
	if drain == "" {
		drain = "2s"
	}
	fmt.Fprintf(&b, "[node]\nname = %q\ndrain_timeout = %q\n%s", c.Host.Name, drain, lines(c.Node))
	fmt.Fprintf(&b, "[identity]\ndir = %q\n", c.Host.IdentityDir())
	if g := c.Gossip; g != nil {
		join := ""
		if g.Seed != nil && g.Seed != c.Host {
			join = fmt.Sprintf("%q", g.Seed.Addr.String()+":7946")
		}
		fmt.Fprintf(&b, "[gossip]\nenabled = true\njoin = [%s]\nkey_file = %q\ngrace_period = \"2s\"\n%s", join, g.KeyFile, lines(g.Keys))
	}
	if c.Capture != "" {
		fmt.Fprintf(&b, "[capture]\n%s", lines(c.Capture))
	}
	for _, w := range c.Workloads {
		fmt.Fprintf(&b, "[[workload]]\nname = %q\naddresses = %s\n%s%s", w.Name, tomlAddrs(w.Addresses), key("service_account", w.ServiceAccount), lines(w.Keys))
	}
	for _, r := range c.Remote {
		fmt.Fprintf(&b, "[[remote_workload]]\nname = %q\naddresses = %s\n%s%s", r.Name, tomlAddrs(r.Addresses), key("service_account", r.ServiceAccount), key("node", r.Node))
	}
	b.WriteString(lines(c.Tables))
	return b.String()
}

// lines ends s with a newline when it has none ("" stays "").
func lines(s string) string {
	if s != "" && !strings.HasSuffix(s, "\n") {
		return s + "\n"
	}
	return s
}

// key is `name = "value"`, or nothing for an empty value.
func key(name, value string) string {
	if value == "" {
		return ""
	}
	return fmt.Sprintf("%s = %q\n", name, value)
}

func tomlAddrs(as []netip.Addr) string {
	q := make([]string, len(as))
	for i, a := range as {
		q[i] = fmt.Sprintf("%q", a.String())
	}
	return "[" + strings.Join(q, ", ") + "]"
}
