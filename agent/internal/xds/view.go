package xds

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// Update is what istiod says about the mesh, in the agent's terms. It is immutable: do not modify it or what
// it points to.
type Update struct {
	// workloads are the cluster's workloads on this host's network that have an address or a hostname, and
	// those of other networks that istiod gives a network gateway (reached only through it, with or without an
	// address: istiod's per-network stand-ins for a service's remote endpoints have none). Local is false.
	// They are those of the last Update built from everything: Patch's replace them (Workloads).
	workloads []*state.Workload
	// Gateways are the networks' east-west gateways, from istiod's "NetworkGateway/<network>/<address>/<port>"
	// workloads (a Gateway of class istio-remote, or a remote cluster's istio-east-west one).
	Gateways []*state.NetworkGateway
	// Services are the cluster's services, declared by node "istiod": VIPs on this host's network, and as
	// endpoints the workloads that list the service. A service whose endpoints map its ports differently
	// (named target ports) comes as several declarations, one per mapping.
	Services []state.ServiceDecl
	// Waypoints are the instances (pods) of every waypoint a workload or service uses, named "namespace/name"
	// after the waypoint's service, as UseWaypoint refers to them.
	Waypoints []*state.Waypoint
	// Policies are istiod's compiled authorization policies, by "namespace/name".
	Policies []policy.XDSAuthorization
	// PolicyGeneration changes whenever Policies does: an Update of the same generation has the same policies.
	PolicyGeneration uint64
	// Generation numbers the Updates; Patch, when not nil, says what this one changed since the last one built
	// from everything.
	Generation uint64
	Patch      *Patch
}

// Workloads returns the Update's workloads (see the field): those of the last Update built from everything, with
// Patch's newer versions in their places. With a Patch it copies the list, O(N): a reader that only needs what
// changed reads Patch.
func (u Update) Workloads() []*state.Workload {
	if u.Patch == nil || len(u.Patch.Workloads) == 0 {
		return u.workloads
	}
	out := slices.Clone(u.workloads)
	for i, w := range u.Patch.Workloads {
		out[u.Patch.at[i]] = w
	}
	return out
}

// WorkloadCount is len(Workloads()), without the copy.
func (u Update) WorkloadCount() int { return len(u.workloads) }

// IstiodNode is the node name of the services learned from istiod.
const IstiodNode = state.IstiodNode

// Labels the agent reads (telemetry, policy selectors) that istiod's workload API carries as fields.
const (
	labelCanonicalName     = "service.istio.io/canonical-name"
	labelCanonicalRevision = "service.istio.io/canonical-revision"
	labelWorkloadName      = "service.istio.io/workload-name"
	labelApp               = "app"
	labelVersion           = "version"
)

// Defaults of the workload API for empty fields (ztunnel src/state/workload.rs, TryFrom<XdsWorkload>).
const (
	defaultTrustDomain    = "cluster.local"
	defaultServiceAccount = "default"
)

// view builds Updates from the store for one host network.
type view struct {
	network string

	workloads map[string]*workload // uid -> a workload kept in the Update
	services  map[string]*service  // "namespace/hostname" -> service
	byVIP     map[netip.Addr]*service
	names     map[string]string // "namespace/hostname" -> the service's name in the agent (see serviceName)
	waypoints map[string]bool   // "namespace/hostname" of services used as a waypoint
	podWPs    map[string]bool   // uids of workloads used as a waypoint by address, without a service
	index     map[string]int    // uid -> its place in the Update's Workloads
}

// build computes the Update for the store's current content.
func build(s *store, network string) Update {
	u, _ := buildView(s, network)
	return u
}

// buildView computes the Update for the store's current content, and the view it is of.
func buildView(s *store, network string) (Update, *view) {
	v := &view{
		network:   network,
		workloads: map[string]*workload{},
		services:  map[string]*service{},
		byVIP:     map[netip.Addr]*service{},
		waypoints: map[string]bool{},
		podWPs:    map[string]bool{},
	}
	var wls, gws []*workload
	for _, a := range s.addresses {
		switch {
		case a.Service != nil:
			v.services[a.Service.key()] = a.Service
			for _, na := range a.Service.Addresses {
				if _, cidr := na.prefix(); cidr {
					continue
				}
				if prev := v.byVIP[na.Addr]; v.onNetwork(na.Network) && (prev == nil || a.Service.key() < prev.key()) {
					v.byVIP[na.Addr] = a.Service // a VIP two services claim: the same one every time
				}
			}
		case a.Workload != nil && strings.HasPrefix(a.Workload.UID, networkGatewayUID):
			gws = append(gws, a.Workload)
		case a.Workload != nil && v.wanted(a.Workload):
			wls = append(wls, a.Workload)
			v.workloads[a.Workload.UID] = a.Workload
		}
	}
	slices.SortFunc(wls, func(a, b *workload) int { return strings.Compare(a.UID, b.UID) })
	slices.SortFunc(gws, func(a, b *workload) int { return strings.Compare(a.UID, b.UID) })
	v.names = serviceNames(v.services)

	var u Update
	v.index = make(map[string]int, len(wls))
	for i, w := range wls {
		u.workloads = append(u.workloads, v.workload(w))
		v.index[w.UID] = i
	}
	u.Services = v.declarations(wls)
	u.Waypoints = v.waypointInstances(wls)
	u.Policies, u.PolicyGeneration = policies(s), s.policyGen
	for _, g := range gws {
		if gw := networkGateway(g); gw != nil {
			u.Gateways = append(u.Gateways, gw)
		}
	}
	return u, v
}

// onNetwork reports whether something on network n is reachable from this host without a network gateway.
// An empty network on either side means one flat network.
func (v *view) onNetwork(n string) bool { return !state.OffNetwork(v.network, n) }

// wanted reports whether w can be reached from this host: on its network, by an address or a hostname (a DNS
// ServiceEntry's host, resolved at connect time); on another one, through the gateway istiod gives it (ztunnel
// reaches no other-network workload without one).
func (v *view) wanted(w *workload) bool {
	if !v.onNetwork(w.Network) {
		return w.NetworkGateway != nil
	}
	return len(w.Addresses) > 0 || w.Hostname != ""
}

// networkGatewayUID starts the UIDs of the workloads istiod makes of network gateways
// (pilot/pkg/serviceregistry/ambient/workloads.go, gatewayUID).
const networkGatewayUID = "NetworkGateway/"

// networkGateway is the gateway istiod's gateway workload w stands for, nil for one the agent cannot use: a
// gateway known by hostname (the agent dials gateways by address), or with no network.
func networkGateway(w *workload) *state.NetworkGateway {
	if w.Network == "" || len(w.Addresses) == 0 {
		return nil
	}
	g := &state.NetworkGateway{
		Network:   w.Network,
		Addresses: slices.Clone(w.Addresses),
		Identity: "spiffe://" + cmp.Or(w.TrustDomain, defaultTrustDomain) + "/ns/" + w.Namespace + "/sa/" +
			cmp.Or(w.ServiceAccount, defaultServiceAccount),
		Origin: state.OriginIstiod,
	}
	// The UID ends in the gateway's HBONE port.
	if i := strings.LastIndexByte(w.UID, '/'); i >= 0 {
		if p, err := strconv.ParseUint(w.UID[i+1:], 10, 16); err == nil && p != 0 {
			g.Port = uint16(p)
		}
	}
	return g
}

func (v *view) workload(w *workload) *state.Workload {
	out := &state.Workload{
		UID:                   w.UID,
		Name:                  w.Name,
		Namespace:             w.Namespace,
		ServiceAccount:        cmp.Or(w.ServiceAccount, defaultServiceAccount),
		TrustDomain:           cmp.Or(w.TrustDomain, defaultTrustDomain),
		Addresses:             slices.Clone(w.Addresses),
		Hostname:              w.Hostname,
		Network:               w.Network,
		ClusterID:             cmp.Or(w.ClusterID, DefaultClusterID),
		Node:                  w.Node,
		Tunnel:                state.TunnelNone,
		Healthy:               w.Status == statusHealthy,
		Capacity:              w.Capacity,
		Locality:              w.Locality,
		UseWaypoint:           v.waypointRef(w.Waypoint),
		AuthorizationPolicies: slices.Clone(w.AuthorizationPolicies),
		Origin:                state.OriginIstiod,
	}
	// LEGACY_ISTIO_MTLS (a sidecar without HBONE) is reached in plaintext: the agent speaks HBONE only.
	if w.Tunnel == tunnelHBONE {
		out.Tunnel = state.TunnelHBONE
	}
	labels := map[string]string{}
	if w.CanonicalName != "" {
		labels[labelCanonicalName] = w.CanonicalName
		labels[labelApp] = w.CanonicalName // ztunnel's source_app / destination_app
	}
	if w.CanonicalRevision != "" {
		labels[labelCanonicalRevision] = w.CanonicalRevision
		labels[labelVersion] = w.CanonicalRevision
	}
	if w.WorkloadName != "" {
		labels[labelWorkloadName] = w.WorkloadName // telemetry's *_workload: never the pod name
	}
	if len(labels) > 0 {
		out.Labels = labels
	}
	return out
}

// waypointRef names the waypoint a GatewayAddress designates, "namespace/name", and remembers its service
// so that its instances are published. istiod has already chosen the waypoint (scope, opt-out), so no
// waypoint is "none": the agent's own scope lookup must not attach another one.
func (v *view) waypointRef(g *gatewayAddress) string {
	if g == nil {
		return state.UseWaypointNone
	}
	var svc *service
	if g.Hostname != "" {
		svc = v.services[g.Namespace+"/"+g.Hostname]
		if svc == nil { // not received yet: a name that resolves to nothing, until it is
			return g.Namespace + "/" + g.Hostname
		}
	} else {
		if svc = v.byVIP[g.Address.Addr]; svc == nil {
			if w := v.workloadAt(g.Address.Addr); w != nil {
				v.podWPs[w.UID] = true
				return w.Namespace + "/" + w.Name
			}
			return "/" + g.Address.Addr.String()
		}
	}
	v.waypoints[svc.key()] = true
	return svc.Namespace + "/" + v.names[svc.key()]
}

// workloadAt finds the workload with address a (a waypoint given by a pod address, without a service).
func (v *view) workloadAt(a netip.Addr) *workload {
	var found *workload
	for _, w := range v.workloads {
		if v.onNetwork(w.Network) && slices.Contains(w.Addresses, a) && (found == nil || w.UID < found.UID) {
			found = w
		}
	}
	return found
}

// serviceNames gives each service its name in the agent, where a service is "namespace/name": its own name,
// or its hostname when several services share a namespace and name (a ServiceEntry with several hosts is one
// istio Service per host) or it has none.
func serviceNames(svcs map[string]*service) map[string]string {
	count := map[string]int{}
	for _, s := range svcs {
		count[s.Namespace+"/"+s.Name]++
	}
	names := make(map[string]string, len(svcs))
	for key, s := range svcs {
		if s.Name == "" || count[s.Namespace+"/"+s.Name] > 1 {
			names[key] = s.Hostname
		} else {
			names[key] = s.Name
		}
	}
	return names
}

// declarations turns the services into declarations. Endpoints map service ports as their workload says
// (Workload.services), else as the service does (a target_port of 0 means "per endpoint"), as ztunnel does
// (src/state.rs, find_upstream); workloads with one mapping share a declaration.
func (v *view) declarations(wls []*workload) []state.ServiceDecl {
	keys := slices.Sorted(maps.Keys(v.services))
	backing := map[string][]*workload{} // service key -> the workloads that list it, in uid order
	for _, w := range wls {
		for key := range w.Services {
			backing[key] = append(backing[key], w)
		}
	}
	var out []state.ServiceDecl
	for _, key := range keys {
		s := v.services[key]
		base := state.ServiceDecl{
			Node:        IstiodNode,
			Origin:      state.OriginIstiod,
			Name:        v.names[key],
			Namespace:   s.Namespace,
			Hostname:    s.Hostname,
			Ports:       servicePorts(s.Ports),
			UseWaypoint: v.waypointRef(s.Waypoint),
			Traffic: state.Traffic{SubjectAltNames: slices.Clone(s.SubjectAltNames), LoadBalancing: s.LoadBalancing,
				NamespaceOnly: s.NamespaceOnly},
		}
		for _, ww := range s.Weighted {
			base.Traffic.WeightedWaypoints = append(base.Traffic.WeightedWaypoints,
				state.WeightedWaypoint{Waypoint: v.waypointRef(ww.Destination), Weight: ww.Weight})
		}
		for _, a := range s.Addresses {
			switch p, cidr := a.prefix(); {
			case !v.onNetwork(a.Network):
			case cidr:
				base.Traffic.VIPRanges = append(base.Traffic.VIPRanges, p)
			case !slices.Contains(base.VIPs, a.Addr):
				base.VIPs = append(base.VIPs, a.Addr)
			}
		}
		groups := []state.ServiceDecl{base}
		for _, w := range backing[key] {
			ports := endpointPorts(s.Ports, w.Services[key])
			i := slices.IndexFunc(groups, func(d state.ServiceDecl) bool { return slices.Equal(d.Ports, ports) })
			if i < 0 {
				d := base
				d.Ports, d.Workloads = ports, nil
				groups = append(groups, d)
				i = len(groups) - 1
			}
			groups[i].Workloads = append(groups[i].Workloads, w.UID)
		}
		out = append(out, groups...)
	}
	return out
}

func servicePorts(ps []port) []state.ServicePort {
	out := make([]state.ServicePort, 0, len(ps))
	for _, p := range ps {
		out = append(out, state.ServicePort{Port: p.ServicePort, TargetPort: p.TargetPort, AppProtocol: appProtocol(p.AppProtocol)})
	}
	return out
}

// endpointPorts is where one workload serves each service port; a port it cannot be reached on is left out.
func endpointPorts(svc, own []port) []state.ServicePort {
	out := make([]state.ServicePort, 0, len(svc))
	for _, p := range svc {
		target := p.TargetPort
		if i := slices.IndexFunc(own, func(o port) bool { return o.ServicePort == p.ServicePort }); i >= 0 && own[i].TargetPort != 0 {
			target = own[i].TargetPort
		}
		if target == 0 {
			continue
		}
		out = append(out, state.ServicePort{Port: p.ServicePort, TargetPort: target, AppProtocol: appProtocol(p.AppProtocol)})
	}
	return out
}

// appProtocol spells istio.workload.AppProtocol as the agent's configuration does.
func appProtocol(p uint64) string {
	switch p {
	case 1:
		return "http"
	case 2:
		return "http2"
	case 3:
		return "grpc"
	case 4:
		return "tcp"
	case 5:
		return "tls"
	}
	return ""
}

// waypointInstances publishes a state.Waypoint for each workload behind a service used as a waypoint.
func (v *view) waypointInstances(wls []*workload) []*state.Waypoint {
	var out []*state.Waypoint
	for _, w := range wls {
		if len(w.Addresses) == 0 || !v.onNetwork(w.Network) { // a waypoint on another network is not reached by address
			continue
		}
		if v.podWPs[w.UID] {
			out = append(out, waypointInstance(w, w.Name, w.Namespace))
		}
		for key := range w.Services {
			if !v.waypoints[key] {
				continue
			}
			out = append(out, waypointInstance(w, v.names[key], v.services[key].Namespace))
		}
	}
	slices.SortFunc(out, func(a, b *state.Waypoint) int {
		return cmp.Or(strings.Compare(a.Key(), b.Key()), strings.Compare(a.Node, b.Node), a.Addresses[0].Compare(b.Addresses[0]))
	})
	return out
}

// waypointInstance is workload w serving as waypoint namespace/name.
func waypointInstance(w *workload, name, namespace string) *state.Waypoint {
	return &state.Waypoint{
		Name:           name,
		Namespace:      namespace,
		ServiceAccount: cmp.Or(w.ServiceAccount, defaultServiceAccount),
		TrustDomain:    cmp.Or(w.TrustDomain, defaultTrustDomain),
		Addresses:      slices.Clone(w.Addresses),
		Node:           w.Node,
		Origin:         state.OriginIstiod,
		// A pod that is not ready takes no traffic, and keeps the name bound to its identity.
		Unready: w.Status != statusHealthy,
	}
}

func policies(s *store) []policy.XDSAuthorization {
	out := make([]policy.XDSAuthorization, 0, len(s.policies))
	for _, p := range s.policies {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b policy.XDSAuthorization) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out
}
