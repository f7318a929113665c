package config

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/ambient-agent/ambient-agent/ports"
)

// ReservedNodeName is the node name of what istiod declares (its services,
// in the agent's state); no host may take it.
const ReservedNodeName = "istiod"

// StaticNodeName is the node of [[remote_workload]] entries that name none.
const StaticNodeName = "static"

// The ranges service VIPs are allocated from (Istio's auto-allocation ranges, spec/routing.md): explicit VIPs a peer
// declares must be in them or in [gossip] allowed_vips.
var (
	VIPRangeV4 = netip.MustParsePrefix("240.240.0.0/16")
	VIPRangeV6 = netip.MustParsePrefix("2001:2::/48")
)

// MaxCapacity bounds a workload's capacity (its weight among a service's endpoints), here and in gossip: one
// endpoint can outweigh another a thousandfold, never take a service's whole traffic by its own word.
const MaxCapacity = 1000

// Defaults of the runtime configuration, also documented in conf/config.toml.
const (
	DefaultPath           = "/etc/ambient-agent/config.toml"
	DefaultTrustDomain    = "cluster.local"
	DefaultNamespace      = "default"
	DefaultServiceAccount = "default"
	DefaultDrainTimeout   = 5 * time.Second
	DefaultHandoffDrain   = time.Hour
	DefaultIdentitySource = SourceFiles
	DefaultIdentityDir    = "/etc/ambient-agent/identity"
	DefaultSpireSocket    = "/run/spire/agent/public/api.sock"
	DefaultPolicyDir      = "/etc/ambient-agent/policies"
	DefaultRootNamespace  = "istio-system"
	DefaultControlSocket  = "/run/ambient-agent/control.sock"
)

// Default listen addresses, on the agent's ports.
var (
	DefaultAdminAddress     = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), ports.Admin).String()
	DefaultReadinessAddress = netip.AddrPortFrom(netip.IPv4Unspecified(), ports.Readiness).String()
	DefaultMetricsAddress   = netip.AddrPortFrom(netip.IPv4Unspecified(), ports.Metrics).String()
)

// Gossip defaults.
const (
	DefaultGossipPort  = 7946
	DefaultGossipKey   = "/etc/ambient-agent/gossip.key"
	DefaultGracePeriod = 30 * time.Second
)

// DefaultMark is the socket mark of the agent's own connections (SO_MARK), which
// capture lets through.
const DefaultMark = ports.Mark

// DefaultExcludeInboundPorts are the inbound ports left uncaptured unless configured.
var DefaultExcludeInboundPorts = []uint16{22}

// Identity sources.
const (
	SourceFiles = "files"
	SourceSpire = "spire"
	SourceIstio = "istio" // istiod's CA, with the [istio] settings
)

// Log formats.
const (
	FormatText = "text"
	FormatJSON = "json"
)

// Config is the validated runtime configuration: defaults resolved, values parsed.
// It is immutable once built; a reload builds a new one.
type Config struct {
	Path      string     `json:"path"`
	Node      Node       `json:"node"`
	Identity  Identity   `json:"identity"`
	Gossip    Gossip     `json:"gossip"`
	Capture   Capture    `json:"capture"`
	Workloads []Workload `json:"workloads"`
	Remotes   []Remote   `json:"remoteWorkloads"`
	Services  []Service  `json:"services"`
	Waypoint  Waypoint   `json:"waypoint"`
	Gateway   Gateway    `json:"gateway"`
	DNS       DNS        `json:"dns"`
	Istio     Istio      `json:"istio"`
	Policy    Policy     `json:"policy"`
	Admin     Admin      `json:"admin"`
	Limits    Limits     `json:"limits"`
	Log       Log        `json:"log"`
}

// Node describes this host.
type Node struct {
	Name        string `json:"name"`
	TrustDomain string `json:"trustDomain"`
	Network     string `json:"network"`
	ClusterID   string `json:"clusterId"`
	// Locality is "region/zone/subzone" (Istio's WorkloadEntry locality;
	// trailing parts may be left out): where the host's workloads run, for
	// services that prefer close endpoints.
	Locality     string        `json:"locality,omitempty"`
	DrainTimeout time.Duration `json:"drainTimeout"`
	// HandoffDrain is how long an agent that a new one replaced (an upgrade,
	// a restart) goes on relaying the connections it holds.
	HandoffDrain time.Duration `json:"handoffDrainTimeout"`
}

// Identity says where the certificates of the local workloads come from.
type Identity struct {
	Source      string `json:"source"`
	Dir         string `json:"dir"`
	SpireSocket string `json:"spireSocket"`
}

// Workload is a local workload of this host.
type Workload struct {
	Name           string            `json:"name"`
	Namespace      string            `json:"namespace"`
	ServiceAccount string            `json:"serviceAccount"`
	Addresses      []netip.Addr      `json:"addresses"`
	Labels         map[string]string `json:"labels,omitempty"`
	// UseWaypoint is a waypoint's "name" (same namespace) or
	// "namespace/name"; "" and "none" mean none (spec/routing.md: explicit
	// binding only).
	UseWaypoint string `json:"useWaypoint,omitempty"`
	// AutoRegister is the WorkloadGroup (of the workload's namespace) through which istiod creates the
	// workload's WorkloadEntry while the agent is connected ([istio]; "" registers nothing).
	AutoRegister string `json:"autoRegister,omitempty"`
	// Capacity weighs the workload among a service's endpoints.
	Capacity uint32       `json:"capacity"`
	Health   *HealthCheck `json:"health,omitempty"`
	// Ports are the ports the workload serves; required when workloads share an address.
	Ports []uint16 `json:"ports,omitempty"`
	// Processes says how the agent recognises the workload's processes; empty
	// for a workload recognised by its source address only.
	Processes ProcessMatch `json:"processes,omitzero"`
}

// Tunnel protocols of remote workloads.
const (
	TunnelHBONE = "hbone" // reached over HBONE (captured by an agent or a ztunnel)
	TunnelNone  = "none"  // reached in plaintext
)

// Remote is a workload on another host, declared statically.
type Remote struct {
	Workload
	Node   string `json:"node"`
	Tunnel string `json:"tunnel"`
}

// Admin holds the addresses of the operator endpoints.
type Admin struct {
	// Socket is the control API's unix socket: everything that changes the
	// agent or shows its configuration, for its user and group only.
	Socket           string         `json:"socket"`
	Address          netip.AddrPort `json:"address"`
	ReadinessAddress netip.AddrPort `json:"readinessAddress"`
	MetricsAddress   netip.AddrPort `json:"metricsAddress"`
}

// Log is the logging setup.
type Log struct {
	Level  slog.Level `json:"level"`
	Format string     `json:"format"`
	// Access logs one line per connection (the access log); metrics count
	// them either way.
	Access bool `json:"access"`
}

// Capture says which traffic nftables redirects to the agent.
type Capture struct {
	Enabled              bool           `json:"enabled"`
	Mark                 uint32         `json:"mark"`
	ExcludeInboundPorts  []uint16       `json:"excludeInboundPorts"`
	ExcludeOutboundPorts []uint16       `json:"excludeOutboundPorts"`
	ExcludeCIDRs         []netip.Prefix `json:"excludeCidrs"`
	// InboundAddresses is InboundAll (every local address of the host is
	// captured inbound, but UnmeshedAddresses) or InboundWorkloads (only the
	// workloads' addresses).
	InboundAddresses  string         `json:"inboundAddresses"`
	UnmeshedAddresses []netip.Prefix `json:"unmeshedAddresses"`
	ExcludeUIDs       []uint32       `json:"excludeUids"`
	ExcludeGIDs       []uint32       `json:"excludeGids"`
	// Unmatched is what happens to outbound TCP of processes that belong to no
	// workload recognised by user, group or unit: UnmatchedDefault or UnmatchedPassthrough.
	Unmatched string `json:"unmatched"`
	// DefaultWorkload is the workload ("namespace/name") whose identity such
	// processes use; "" means the workload owning the source address, else the first.
	DefaultWorkload string `json:"defaultWorkload,omitempty"`
	// OriginalSource: the agent connects to local applications from the client's address, so that they see
	// the real client (IP_TRANSPARENT, with ports.ReturnMark and a policy rule for the replies).
	OriginalSource bool `json:"originalSource"`
}

// HandoffSocket is where the running agent answers the one that replaces it
// (package handoff): beside the control socket.
func (a Admin) HandoffSocket() string { return a.Socket + ".handoff" }

// MarshalJSON shows durations as "5s" rather than nanoseconds.
func (n Node) MarshalJSON() ([]byte, error) {
	type plain Node
	return json.Marshal(struct {
		plain
		DrainTimeout string `json:"drainTimeout"`
		HandoffDrain string `json:"handoffDrainTimeout"`
	}{plain(n), n.DrainTimeout.String(), n.HandoffDrain.String()})
}

// UnmarshalJSON reads what MarshalJSON writes (the CLI reads /config_dump).
func (n *Node) UnmarshalJSON(b []byte) error {
	type plain Node
	var v struct {
		plain
		DrainTimeout string `json:"drainTimeout"`
		HandoffDrain string `json:"handoffDrainTimeout"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*n = Node(v.plain)
	return errors.Join(parseDuration(v.DrainTimeout, &n.DrainTimeout), parseDuration(v.HandoffDrain, &n.HandoffDrain))
}

// parseDuration parses text ("5s") into d; "" leaves d as it is.
func parseDuration(text string, d *time.Duration) error {
	if text == "" {
		return nil
	}
	v, err := time.ParseDuration(text)
	*d = v
	return err
}

// Gossip is the membership and discovery setup.
type Gossip struct {
	Enabled bool `json:"enabled"`
	// Bind is the address memberlist listens on (TCP and UDP).
	Bind netip.AddrPort `json:"bind"`
	// Advertise is the address other nodes use to reach this one; invalid
	// (zero) means: the bind address, or the host's address when bind is
	// unspecified.
	Advertise netip.AddrPort `json:"advertise"`
	// Join are the seeds: host:port or ip:port of other nodes.
	Join []string `json:"join"`
	// KeyFile holds the encryption keys, base64, one per line, first one used
	// to send. Only its path is kept here, never the keys.
	KeyFile         string        `json:"keyFile"`
	InsecureDevMode bool          `json:"insecureDevMode"`
	GracePeriod     time.Duration `json:"gracePeriod"`
	// AcceptUnsigned takes peers' records that prove nothing (agents before
	// signed records), for a rolling upgrade only; their claims count as
	// unproven ones (docs/gossip.md).
	AcceptUnsigned bool `json:"acceptUnsigned"`
	// AllowedHostnames are DNS domains, besides [dns] domains, under which
	// peers may declare service hostnames.
	AllowedHostnames []string `json:"allowedHostnames,omitempty"`
	// AllowedVIPs are where peers may put explicit service VIPs, besides the
	// allocation ranges.
	AllowedVIPs []netip.Prefix `json:"allowedVIPs,omitempty"`
	// GatewayIdentities are the identities, "namespace/service_account", a peer's east-west gateway may have
	// (docs/multi-network.md); a gateway of another identity is ignored.
	GatewayIdentities []string `json:"gatewayIdentities"`
	// RequireAddressProof uses a peer's workload only when its certificate's
	// IP SANs name its addresses.
	RequireAddressProof bool `json:"requireAddressProof"`
}

// Policy says where Istio AuthorizationPolicy and PeerAuthentication YAML is.
type Policy struct {
	// Dir holds *.yaml / *.yml files; a missing directory means no policy.
	Dir string `json:"dir"`
	// RootNamespace is where policies apply mesh-wide (Istio's root namespace).
	RootNamespace string `json:"rootNamespace"`
	// WaypointEnforcement is what happens to callers that bypass a local
	// workload's waypoint: "policy" (the default, as ztunnel) or "hairpin"
	// (spec/routing.md).
	WaypointEnforcement string `json:"waypointEnforcement"`
	// Hairpin is the identity the host presents to a waypoint for the
	// plaintext callers it hairpins (never the destination's: the waypoint
	// would authorize an anonymous client as that workload); set exactly
	// when WaypointEnforcement is "hairpin".
	Hairpin *HairpinIdentity `json:"hairpin,omitempty"`
}

// HairpinIdentity is a dedicated identity of the host: no workload and no
// waypoint of the host has it.
type HairpinIdentity struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
}
