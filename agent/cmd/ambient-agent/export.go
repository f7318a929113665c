package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

func exportCommands() table {
	return table{name: "ambient-agent export", noun: "kind", cmds: map[string]command{
		"kubernetes": {"Istio WorkloadEntry and ServiceEntry YAML for kubectl apply -f - (docs/kubernetes.md)", runExportKubernetes},
	}}
}

func runExportKubernetes(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("export kubernetes", "export kubernetes [-config FILE]", stderr)
	path := configFlag(fs)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printLoadError(stderr, err)
		return 1
	}
	out, err := kubernetesYAML(cfg)
	if err != nil {
		return failed(stderr, "export kubernetes", err)
	}
	if _, err := stdout.Write(out); err != nil {
		return 1
	}
	return 0
}

// printLoadError prints what config.Load returned: every problem on a line of
// its own (config.Problems' Error), as validate does.
func printLoadError(w io.Writer, err error) { fmt.Fprintln(w, err) }

// What istiod reads (istio/istio: pilot/pkg/model/service.go, pilot/pkg/serviceregistry/ambient).
const (
	istioNetworkingV1 = "networking.istio.io/v1"
	// tunnelLabel = "http" makes istiod give the workload tunnel protocol HBONE with a native tunnel: peers send
	// HBONE to its address on port 15008, where this host's agent answers.
	tunnelLabel          = "networking.istio.io/tunnel"
	tunnelHTTP           = "http"
	useWaypointLabel     = "istio.io/use-waypoint"
	useWaypointNamespace = "istio.io/use-waypoint-namespace"
	locationMeshInternal = "MESH_INTERNAL"
	resolutionStatic     = "STATIC"
)

// Our labels: who made an object, which host a WorkloadEntry is on, which services select it.
const (
	managedByLabel        = "app.kubernetes.io/managed-by"
	managedByAmbientAgent = "ambient-agent"
	nodeLabel             = "ambient-agent.io/node"
	serviceSelectorDomain = "service.ambient-agent.io/"
	serviceSelectorValue  = "true"
)

// allocatedNote is printed above a ServiceEntry without addresses.
var allocatedNote = []string{
	"# No vips in the config: Istio allocates an address from 240.240.0.0/16 (status.addresses),",
	"# which need not be the VIP the agents compute from the hostname; set vips where both must agree.",
}

// k8sObject is one Kubernetes object of the export; Spec is a workloadEntrySpec or a serviceEntrySpec.
type k8sObject struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       any        `json:"spec"`
}

type objectMeta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels,omitempty"`
}

type workloadEntrySpec struct {
	Address        string            `json:"address"`
	Ports          map[string]uint16 `json:"ports,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	Network        string            `json:"network,omitempty"`
	Locality       string            `json:"locality,omitempty"`
	Weight         uint32            `json:"weight,omitempty"`
	ServiceAccount string            `json:"serviceAccount"`
}

type serviceEntrySpec struct {
	Hosts            []string           `json:"hosts"`
	Addresses        []string           `json:"addresses,omitempty"`
	Ports            []serviceEntryPort `json:"ports"`
	Location         string             `json:"location"`
	Resolution       string             `json:"resolution"`
	WorkloadSelector workloadSelector   `json:"workloadSelector"`
}

type serviceEntryPort struct {
	Number     uint16 `json:"number"`
	Protocol   string `json:"protocol"`
	Name       string `json:"name"`
	TargetPort uint16 `json:"targetPort"`
}

type workloadSelector struct {
	Labels map[string]string `json:"labels"`
}

// document is an object with the comment lines printed above it.
type document struct {
	comments []string
	object   k8sObject
}

// kubernetesYAML renders the host's workloads and then its services as a multi-document YAML stream, each
// group sorted by namespace and name, so that the same configuration always prints the same bytes.
func kubernetesYAML(cfg *config.Config) ([]byte, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# Istio objects for the workloads and services of host %q, made by ambient-agent from %s.\n", cfg.Node.Name, cfg.Path)
	command := "ambient-agent export kubernetes"
	if cfg.Path != config.DefaultPath {
		command += " -config " + cfg.Path
	}
	fmt.Fprintf(&b, "# Apply with: %s | kubectl apply -f -\n", command)
	fmt.Fprintf(&b, "# The cluster must run Istio in ambient mode with trustDomain %q (node.trust_domain). See docs/kubernetes.md.\n",
		cfg.Node.TrustDomain)
	docs := kubernetesDocuments(cfg)
	if len(docs) == 0 {
		b.WriteString("# The configuration has no [[workload]] and no [[service]]: nothing to apply.\n")
	}
	for _, d := range docs {
		y, err := yaml.Marshal(d.object)
		if err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", d.object.Kind, d.object.Metadata.Namespace, d.object.Metadata.Name, err)
		}
		b.WriteString("---\n")
		for _, c := range d.comments {
			b.WriteString(c + "\n")
		}
		b.Write(y)
	}
	return []byte(b.String()), nil
}

func kubernetesDocuments(cfg *config.Config) []document {
	workloads := slices.Clone(cfg.Workloads)
	slices.SortFunc(workloads, func(a, b config.Workload) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	services := slices.Clone(cfg.Services)
	slices.SortFunc(services, func(a, b config.Service) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	docs := make([]document, 0, len(workloads)+len(services))
	for _, w := range workloads {
		docs = append(docs, workloadEntry(w, backedServices(w, services), cfg.Node))
	}
	for _, s := range services {
		docs = append(docs, serviceEntry(s))
	}
	return docs
}

// backedServices returns the services (sorted) that name w among their workloads.
func backedServices(w config.Workload, sorted []config.Service) []config.Service {
	var out []config.Service
	for _, s := range sorted {
		if s.Namespace == w.Namespace && slices.Contains(s.Workloads, w.Name) {
			out = append(out, s)
		}
	}
	return out
}

func workloadEntry(w config.Workload, services []config.Service, node config.Node) document {
	labels := maps.Clone(w.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[managedByLabel] = managedByAmbientAgent
	labels[nodeLabel] = node.Name
	labels[tunnelLabel] = tunnelHTTP
	for _, s := range services {
		labels[serviceSelectorLabel(s)] = serviceSelectorValue
	}
	setWaypointLabels(labels, w.UseWaypoint, w.Namespace)

	addr, others := preferIPv4(w.Addresses)
	var comments []string
	if len(others) > 0 {
		comments = append(comments, fmt.Sprintf("# A WorkloadEntry holds one address; not exported: %s.", joinAddrs(others)))
	}
	ports, conflicts := workloadPorts(services)
	for _, name := range conflicts {
		comments = append(comments, fmt.Sprintf("# Port %s maps to different target ports in different services: "+
			"left out, each ServiceEntry's targetPort applies.", name))
	}
	spec := workloadEntrySpec{
		Address:        addr.String(),
		Ports:          ports,
		Labels:         labels,
		Network:        node.Network,
		Locality:       node.Locality,
		ServiceAccount: w.ServiceAccount,
	}
	if w.Capacity > 1 {
		spec.Weight = w.Capacity
	}
	return document{comments: comments, object: k8sObject{
		APIVersion: istioNetworkingV1,
		Kind:       "WorkloadEntry",
		// istiod merges metadata and spec labels; both carry the same set so either reader sees all of them.
		Metadata: objectMeta{Name: w.Name, Namespace: w.Namespace, Labels: labels},
		Spec:     spec,
	}}
}

func serviceEntry(s config.Service) document {
	labels := map[string]string{managedByLabel: managedByAmbientAgent}
	setWaypointLabels(labels, s.UseWaypoint, s.Namespace)
	spec := serviceEntrySpec{
		Hosts:            []string{s.Hostname},
		Location:         locationMeshInternal,
		Resolution:       resolutionStatic,
		WorkloadSelector: workloadSelector{Labels: map[string]string{serviceSelectorLabel(s): serviceSelectorValue}},
	}
	var comments []string
	if len(s.VIPs) == 0 {
		comments = append(comments, allocatedNote...)
	}
	for _, v := range s.VIPs {
		spec.Addresses = append(spec.Addresses, v.String())
	}
	for _, p := range s.Ports {
		spec.Ports = append(spec.Ports, serviceEntryPort{
			Number:     p.Port,
			Protocol:   istioProtocol(p.AppProtocol),
			Name:       portName(p),
			TargetPort: p.TargetPort,
		})
	}
	return document{comments: comments, object: k8sObject{
		APIVersion: istioNetworkingV1,
		Kind:       "ServiceEntry",
		Metadata:   objectMeta{Name: s.Name, Namespace: s.Namespace, Labels: labels},
		Spec:       spec,
	}}
}

// serviceSelectorLabel is the label that ties a service's WorkloadEntries to its ServiceEntry: one label per
// service, so a workload can back several. The service name (a DNS label) is the label's name part, which
// Kubernetes allows up to the same 63 characters; a selector on a shared key such as app could not.
func serviceSelectorLabel(s config.Service) string {
	return serviceSelectorDomain + s.Name
}

// setWaypointLabels maps a use_waypoint value ("", "none", "name" or "namespace/name") to Istio's labels. A
// set value owns both labels, so that a namespace label copied from the workload's labels cannot redirect it.
func setWaypointLabels(labels map[string]string, useWaypoint, namespace string) {
	if useWaypoint == "" {
		return
	}
	delete(labels, useWaypointNamespace)
	ns, name, qualified := strings.Cut(useWaypoint, "/")
	if !qualified {
		labels[useWaypointLabel] = useWaypoint
		return
	}
	labels[useWaypointLabel] = name
	if ns != namespace {
		labels[useWaypointNamespace] = ns
	}
}

// workloadPorts maps the names of the ServiceEntry ports to the workload's port, which is how istiod pairs a
// WorkloadEntry with a ServiceEntry port. A name that two services map differently is left out (and returned):
// the ServiceEntries always carry their targetPort, which istiod uses when the name is missing.
func workloadPorts(services []config.Service) (map[string]uint16, []string) {
	ports := map[string]uint16{}
	conflict := map[string]bool{}
	for _, s := range services {
		for _, p := range s.Ports {
			name := portName(p)
			if prev, ok := ports[name]; ok && prev != p.TargetPort {
				conflict[name] = true
			}
			ports[name] = p.TargetPort
		}
	}
	for name := range conflict {
		delete(ports, name)
	}
	if len(ports) == 0 {
		ports = nil
	}
	return ports, slices.Sorted(maps.Keys(conflict))
}

// portName follows Istio's "<protocol>-<suffix>" port naming, with the service port as suffix.
func portName(p config.ServicePort) string {
	return fmt.Sprintf("%s-%d", strings.ToLower(istioProtocol(p.AppProtocol)), p.Port)
}

// istioProtocol maps an app_protocol to a ServiceEntry port protocol. The agent forwards every protocol at L4,
// so anything it does not name is TCP.
func istioProtocol(appProtocol string) string {
	switch strings.ToLower(appProtocol) {
	case "http":
		return "HTTP"
	case "http2", "h2c", "kubernetes.io/h2c":
		return "HTTP2"
	case "grpc":
		return "GRPC"
	case "https":
		return "HTTPS"
	case "tls":
		return "TLS"
	}
	return "TCP"
}

// preferIPv4 returns the first IPv4 address (the first address when there is none) and the others.
func preferIPv4(addrs []netip.Addr) (netip.Addr, []netip.Addr) {
	if len(addrs) == 0 {
		return netip.Addr{}, nil // config.Load refuses a workload without an address
	}
	i := max(slices.IndexFunc(addrs, netip.Addr.Is4), 0)
	return addrs[i], slices.Delete(slices.Clone(addrs), i, i+1)
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
