package policy

import (
	"strconv"
	"time"
)

// Kind is the kind of a parsed resource.
type Kind string

// The kinds the node agent understands. Any other kind parses into a Resource that Compile ignores with a
// warning.
const (
	KindAuthorizationPolicy Kind = "AuthorizationPolicy"
	KindPeerAuthentication  Kind = "PeerAuthentication"
)

// DryRunAnnotation marks an AuthorizationPolicy as dry-run: evaluated and reported, never enforced.
const DryRunAnnotation = "istio.io/dry-run"

// Resource is one YAML document: an Istio AuthorizationPolicy or PeerAuthentication, validated as istiod's
// webhook would, or a document of another kind (only Kind, APIVersion and the metadata are filled in).
type Resource struct {
	Kind              Kind
	APIVersion        string
	Name              string
	Namespace         string
	Annotations       map[string]string
	CreationTimestamp time.Time // zero when absent; breaks ties between PeerAuthentications
	Source            Source

	AuthorizationPolicy *AuthorizationPolicySpec // set for KindAuthorizationPolicy
	PeerAuthentication  *PeerAuthenticationSpec  // set for KindPeerAuthentication
}

// Key is "namespace/name".
func (r *Resource) Key() string { return r.Namespace + "/" + r.Name }

// DryRun reports whether the dry-run annotation is "true" (validated when parsed).
func (r *Resource) DryRun() bool {
	dry, _ := strconv.ParseBool(r.Annotations[DryRunAnnotation])
	return dry
}

// AuthorizationPolicySpec mirrors istio.security.v1.AuthorizationPolicy.
type AuthorizationPolicySpec struct {
	Selector   map[string]string // selector.matchLabels; nil when absent or empty
	TargetRefs []TargetRef       // targetRef and targetRefs together: policies for waypoints
	Action     Action            // ALLOW when absent
	Provider   string            // provider.name, for CUSTOM
	Rules      []RuleSpec
}

// TargetRef names the object a waypoint policy attaches to.
type TargetRef struct {
	Group     string `json:"group,omitempty"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// RuleSpec is one entry of spec.rules.
type RuleSpec struct {
	From []SourceSpec
	To   []OperationSpec
	When []ConditionSpec
}

// SourceSpec is rules[].from[].source.
type SourceSpec struct {
	Principals           []string
	NotPrincipals        []string
	RequestPrincipals    []string // L7
	NotRequestPrincipals []string // L7
	Namespaces           []string
	NotNamespaces        []string
	ServiceAccounts      []string
	NotServiceAccounts   []string
	IPBlocks             []string
	NotIPBlocks          []string
	RemoteIPBlocks       []string // L7
	NotRemoteIPBlocks    []string // L7
}

// OperationSpec is rules[].to[].operation.
type OperationSpec struct {
	Hosts      []string // L7
	NotHosts   []string // L7
	Ports      []string
	NotPorts   []string
	Methods    []string // L7
	NotMethods []string // L7
	Paths      []string // L7
	NotPaths   []string // L7
}

// ConditionSpec is rules[].when[].
type ConditionSpec struct {
	Key       string
	Values    []string
	NotValues []string
}

// MTLSMode is a PeerAuthentication mode.
type MTLSMode string

// PeerAuthentication modes. UNSET inherits from the enclosing level (workload -> namespace -> mesh);
// the mesh default is PERMISSIVE. DISABLE means PERMISSIVE to the node agent: it never refuses an identity.
const (
	MTLSUnset      MTLSMode = "UNSET"
	MTLSDisable    MTLSMode = "DISABLE"
	MTLSPermissive MTLSMode = "PERMISSIVE"
	MTLSStrict     MTLSMode = "STRICT"
)

// PeerAuthenticationSpec mirrors istio.security.v1.PeerAuthentication.
type PeerAuthenticationSpec struct {
	Selector      map[string]string // selector.matchLabels; nil when absent or empty
	Mode          MTLSMode          // mtls.mode; UNSET when absent
	PortLevelMTLS map[uint16]MTLSMode
}
