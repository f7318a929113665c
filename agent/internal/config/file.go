package config

// File is the TOML document as the user writes it. Every field is optional in the
// file; Build resolves defaults. Pointers mark values whose zero is meaningful.
type File struct {
	Node     NodeFile       `toml:"node"`
	Identity IdentityFile   `toml:"identity"`
	Gossip   GossipFile     `toml:"gossip"`
	Capture  CaptureFile    `toml:"capture"`
	Workload []WorkloadFile `toml:"workload"`
	Remote   []RemoteFile   `toml:"remote_workload"`
	Service  []ServiceFile  `toml:"service"`
	Waypoint WaypointFile   `toml:"waypoint"`
	Gateway  GatewayFile    `toml:"gateway"`
	DNS      DNSFile        `toml:"dns"`
	Istio    IstioFile      `toml:"istio"`
	Policy   PolicyFile     `toml:"policy"`
	Admin    AdminFile      `toml:"admin"`
	Limits   LimitsFile     `toml:"limits"`
	Log      LogFile        `toml:"log"`
}

// NodeFile is the [node] table.
type NodeFile struct {
	Name         string `toml:"name"`
	TrustDomain  string `toml:"trust_domain"`
	Network      string `toml:"network"`
	ClusterID    string `toml:"cluster_id"`
	Locality     string `toml:"locality"`
	DrainTimeout string `toml:"drain_timeout"`
	HandoffDrain string `toml:"handoff_drain_timeout"`
}

// IdentityFile is the [identity] table.
type IdentityFile struct {
	Source      string `toml:"source"`
	Dir         string `toml:"dir"`
	SpireSocket string `toml:"spire_socket"`
}

// WorkloadFile is one [[workload]] entry.
type WorkloadFile struct {
	Name           string            `toml:"name"`
	Namespace      string            `toml:"namespace"`
	ServiceAccount string            `toml:"service_account"`
	Addresses      []string          `toml:"addresses"`
	Labels         map[string]string `toml:"labels"`
	UseWaypoint    string            `toml:"use_waypoint"`
	Capacity       *int64            `toml:"capacity"`
	Health         *HealthFile       `toml:"health"`
	Ports          []int64           `toml:"ports"`
	User           string            `toml:"user"`
	Group          string            `toml:"group"`
	Unit           string            `toml:"unit"`
	AutoRegister   string            `toml:"auto_register"`
}

// HealthFile is a workload's [workload.health] table.
type HealthFile struct {
	Kind               string `toml:"kind"`
	Port               int64  `toml:"port"`
	Path               string `toml:"path"`
	Interval           string `toml:"interval"`
	Timeout            string `toml:"timeout"`
	UnhealthyThreshold int64  `toml:"unhealthy_threshold"`
	HealthyThreshold   int64  `toml:"healthy_threshold"`
}

// ServiceFile is one [[service]] entry.
type ServiceFile struct {
	Name            string            `toml:"name"`
	Namespace       string            `toml:"namespace"`
	Hostname        string            `toml:"hostname"`
	VIPs            []string          `toml:"vips"`
	Ports           []ServicePortFile `toml:"ports"`
	Workloads       []string          `toml:"workloads"`
	UseWaypoint     string            `toml:"use_waypoint"`
	ServiceAccounts []string          `toml:"service_accounts"`
}

// ServicePortFile is one entry of a service's ports.
type ServicePortFile struct {
	Port        int64  `toml:"port"`
	TargetPort  int64  `toml:"target_port"`
	AppProtocol string `toml:"app_protocol"`
}

// WaypointFile is the [waypoint] table.
type WaypointFile struct {
	Enabled           *bool    `toml:"enabled"`
	Name              string   `toml:"name"`
	Namespace         string   `toml:"namespace"`
	ServiceAccount    string   `toml:"service_account"`
	ForServiceAccount string   `toml:"for_service_account"`
	Addresses         []string `toml:"addresses"`
}

// GatewayFile is the [gateway] table.
type GatewayFile struct {
	Enabled        *bool    `toml:"enabled"`
	Namespace      string   `toml:"namespace"`
	ServiceAccount string   `toml:"service_account"`
	Network        string   `toml:"network"`
	Addresses      []string `toml:"addresses"`
}

// DNSFile is the [dns] table.
type DNSFile struct {
	Enabled   *bool    `toml:"enabled"`
	Listen    string   `toml:"listen"`
	Capture   bool     `toml:"capture"`
	Upstreams []string `toml:"upstreams"`
	Domains   []string `toml:"domains"`
}

// AdminFile is the [admin] table.
type AdminFile struct {
	Socket           string `toml:"socket"`
	Address          string `toml:"address"`
	ReadinessAddress string `toml:"readiness_address"`
	MetricsAddress   string `toml:"metrics_address"`
}

// LogFile is the [log] table.
type LogFile struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
	Access *bool  `toml:"access"`
}

// CaptureFile is the [capture] table.
type CaptureFile struct {
	Enabled              *bool    `toml:"enabled"`
	Mark                 *int64   `toml:"mark"`
	ExcludeInboundPorts  []int64  `toml:"exclude_inbound_ports"`
	ExcludeOutboundPorts []int64  `toml:"exclude_outbound_ports"`
	ExcludeCIDRs         []string `toml:"exclude_cidrs"`
	InboundAddresses     string   `toml:"inbound_addresses"`
	UnmeshedAddresses    []string `toml:"unmeshed_addresses"`
	ExcludeUIDs          []int64  `toml:"exclude_uids"`
	ExcludeGIDs          []int64  `toml:"exclude_gids"`
	Unmatched            string   `toml:"unmatched"`
	DefaultWorkload      string   `toml:"default_workload"`
	OriginalSource       *bool    `toml:"original_source"`
}

// RemoteFile is one [[remote_workload]] entry: a workload on another host,
// declared statically (small fixed meshes, tests).
type RemoteFile struct {
	WorkloadFile
	Node   string `toml:"node"`
	Tunnel string `toml:"tunnel"`
}

// GossipFile is the [gossip] table.
type GossipFile struct {
	Enabled          *bool    `toml:"enabled"`
	Bind             string   `toml:"bind"`
	Advertise        string   `toml:"advertise"`
	Join             []string `toml:"join"`
	KeyFile          string   `toml:"key_file"`
	InsecureDevMode  bool     `toml:"insecure_dev_mode"`
	GracePeriod      string   `toml:"grace_period"`
	AcceptUnsigned   bool     `toml:"accept_unsigned"`
	AllowedHostnames []string `toml:"allowed_hostnames"`
	AllowedVIPs      []string `toml:"allowed_vips"`
	// GatewayIdentities: see Gossip.GatewayIdentities.
	GatewayIdentities []string `toml:"gateway_identities"`
	// RequireAddressProof: see Gossip.RequireAddressProof.
	RequireAddressProof bool `toml:"require_address_proof"`
}

// PolicyFile is the [policy] table.
type PolicyFile struct {
	Dir                 string `toml:"dir"`
	RootNamespace       string `toml:"root_namespace"`
	WaypointEnforcement string `toml:"waypoint_enforcement"`
	// The hairpin identity: see Policy.Hairpin.
	HairpinNamespace      string `toml:"hairpin_namespace"`
	HairpinServiceAccount string `toml:"hairpin_service_account"`
	HairpinWithIstio      bool   `toml:"hairpin_with_istio"`
}

// IstioFile is the [istio] table.
type IstioFile struct {
	Enabled           bool   `toml:"enabled"`
	Address           string `toml:"address"`
	ServerName        string `toml:"server_name"`
	RootCert          string `toml:"root_cert"`
	TokenDir          string `toml:"token_dir"`
	Discovery         *bool  `toml:"discovery"`
	InsecurePlaintext bool   `toml:"insecure_plaintext"`
}
