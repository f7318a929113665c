package telemetry

import "cmp"

// Unknown is the value of a label the agent does not know, as in Istio.
const Unknown = "unknown"

// Reporters.
const (
	ReporterSource      = "source"      // the outbound side
	ReporterDestination = "destination" // the inbound side
)

// Connection security policies.
const (
	SecurityMutualTLS = "mutual_tls"
	SecurityUnknown   = "unknown"
)

// Flag is a response flag: how a connection ended, from a closed vocabulary
// (the constants below), the value of the response_flags label.
type Flag string

// Response flags.
const (
	FlagNone       Flag = "-"           // carried and closed normally
	FlagDeny       Flag = "DENY"        // refused by authorization
	FlagConnect    Flag = "CONNECT"     // the upstream (or HBONE peer) could not be reached or refused
	FlagTLSFailure Flag = "TLS_FAILURE" // the mTLS handshake failed
	FlagNoRoute    Flag = "NR"          // no route: dropped before any connect (loop, no identity)
	FlagContested  Flag = "CONTESTED"   // the destination address is claimed by workloads none of which could be trusted with it
)

// ConnLabels are the labels of Istio's connection metrics. Empty fields are
// reported as "unknown".
type ConnLabels struct {
	Reporter string

	SourceWorkload           string
	SourceCanonicalService   string
	SourceCanonicalRevision  string
	SourceWorkloadNamespace  string
	SourcePrincipal          string
	SourceApp                string
	SourceVersion            string
	SourceCluster            string
	DestinationService       string
	DestinationServiceNS     string
	DestinationServiceName   string
	DestinationWorkload      string
	DestinationCanonicalSvc  string
	DestinationCanonicalRev  string
	DestinationWorkloadNS    string
	DestinationPrincipal     string
	DestinationApp           string
	DestinationVersion       string
	DestinationCluster       string
	ConnectionSecurityPolicy string
	SourceRegion             string
	SourceZone               string
	DestinationRegion        string
	DestinationZone          string
}

// connLabelNames are the label names, in the order of values().
var connLabelNames = []string{
	"reporter",
	"source_workload", "source_canonical_service", "source_canonical_revision", "source_workload_namespace",
	"source_principal", "source_app", "source_version", "source_cluster",
	"destination_service", "destination_service_namespace", "destination_service_name",
	"destination_workload", "destination_canonical_service", "destination_canonical_revision",
	"destination_workload_namespace", "destination_principal", "destination_app", "destination_version",
	"destination_cluster", "request_protocol", "connection_security_policy", "response_flags",
	"source_region", "source_zone", "destination_region", "destination_zone",
}

func (l *ConnLabels) values(flag Flag) []string {
	v := []string{
		l.Reporter,
		l.SourceWorkload, l.SourceCanonicalService, l.SourceCanonicalRevision, l.SourceWorkloadNamespace,
		l.SourcePrincipal, l.SourceApp, l.SourceVersion, l.SourceCluster,
		l.DestinationService, l.DestinationServiceNS, l.DestinationServiceName,
		l.DestinationWorkload, l.DestinationCanonicalSvc, l.DestinationCanonicalRev,
		l.DestinationWorkloadNS, l.DestinationPrincipal, l.DestinationApp, l.DestinationVersion,
		l.DestinationCluster, "tcp", l.ConnectionSecurityPolicy, string(flag),
		l.SourceRegion, l.SourceZone, l.DestinationRegion, l.DestinationZone,
	}
	for i, s := range v {
		if s == "" {
			v[i] = Unknown
		}
	}
	return v
}

// WorkloadName is what Istio's *_workload labels carry: the workload's
// controller (Deployment, WorkloadEntry) name, never a pod's: the label
// service.istio.io/workload-name (istiod's workload_name), else name.
func WorkloadName(labels map[string]string, name string) string {
	if v := labels["service.istio.io/workload-name"]; v != "" {
		return v
	}
	return name
}

// CanonicalService and CanonicalRevision read Istio's canonical labels of a
// workload, falling back to app and version as Istio does.
func CanonicalService(labels map[string]string, name string) string {
	return cmp.Or(labels["service.istio.io/canonical-name"], labels["app.kubernetes.io/name"], labels["app"], name)
}

// CanonicalRevision is the workload's revision label, or "latest".
func CanonicalRevision(labels map[string]string) string {
	return cmp.Or(labels["service.istio.io/canonical-revision"], labels["app.kubernetes.io/version"], labels["version"], "latest")
}
