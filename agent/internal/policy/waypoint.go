package policy

import "fmt"

// Policies at a waypoint. Istio attaches an AuthorizationPolicy with targetRefs to a waypoint by what the
// references name (pilot/pkg/model/policyattachment.go, WorkloadPolicyMatcher.ShouldAttachPolicy, for a
// waypoint proxy and the service of the listener chain):
//   - Gateway (gateway.networking.k8s.io) <name>: the waypoint <name>, from a policy in the waypoint's
//     namespace;
//   - Service (core) or ServiceEntry (networking.istio.io) <name>: the service <name> of the policy's
//     namespace, for the connections through a waypoint to that service;
//   - GatewayClass (gateway.networking.k8s.io) istio-waypoint: every waypoint, from a policy in the root
//     namespace only.
//
// Selector policies never apply at a waypoint (they apply at the destination's node agent). A host's
// services come from one registry, so a Service and a ServiceEntry reference both name the same service;
// istiod tells a Kubernetes Service from a ServiceEntry of the same name.

// WaypointGatewayClass is the GatewayClass of waypoints; a policy of the root namespace that targets it
// applies at every waypoint.
const WaypointGatewayClass = "istio-waypoint"

const (
	gatewayAPIGroup      = "gateway.networking.k8s.io"
	istioNetworkingGroup = "networking.istio.io"
	coreGroup            = "core" // what istiod reads an empty group as
)

// WaypointTarget names what a connection through a waypoint is for; the waypoint evaluates the policies
// attached to its Gateway, to the target's Service, and to the istio-waypoint GatewayClass.
type WaypointTarget struct {
	WaypointNamespace, WaypointName string // the Gateway
	ServiceNamespace, ServiceName   string // "" when the target is a workload, not a service
}

// EvaluateWaypoint decides one connection through a waypoint, with Evaluate's four steps and dry-run
// handling, over the policies attached to t (see WaypointTarget): no selector policy, no
// PeerAuthentication. c is read as for Evaluate: DestNamespace is the target's namespace, DestIP and
// DestPort the target's address and port, SourceIdentity the caller's verified identity, SourceIP the
// caller's address (or the forwarded client's). A nil *Set allows everything.
//
// With c.Request set (a request on an HTTP port, at the waypoint's L7), a policy's L7 attributes are matched
// against the request, as Envoy's waypoint does; without, they are not, as for a ztunnel.
func (s *Set) EvaluateWaypoint(c Conn, t WaypointTarget) Decision {
	var buf [maxInlinePolicies]*Authorization
	return evaluate(s.waypointApplicable(&t, buf[:0]), &c)
}

// ApplicableWaypoint lists the policies EvaluateWaypoint considers for t, in reporting order, dry-run ones
// included: the waypoint's counterpart of Applicable.
func (s *Set) ApplicableWaypoint(t WaypointTarget) []Authorization {
	var buf [maxInlinePolicies]*Authorization
	return copies(s.waypointApplicable(&t, buf[:0]))
}

// waypointApplicable appends the policies attached to t to out, sorted by ord, each once.
func (s *Set) waypointApplicable(t *WaypointTarget, out []*Authorization) []*Authorization {
	if s == nil {
		return out
	}
	w := &s.waypoint
	out = append(out, w.everyWaypoint...)
	out = append(out, w.gateways[objectRef{t.WaypointNamespace, t.WaypointName}]...)
	if t.ServiceName != "" {
		out = append(out, w.services[objectRef{t.ServiceNamespace, t.ServiceName}]...)
	}
	sortByOrd(out)
	// A policy may reach the waypoint by several references (its Gateway and the target's Service).
	n := 0
	for i, a := range out {
		if i == 0 || a != out[n-1] {
			out[n] = a
			n++
		}
	}
	return out[:n]
}

// waypointIndex holds the compiled ScopeWaypoint policies by what they attach to.
type waypointIndex struct {
	policies      []*Authorization // by (namespace, name); ord is the index
	everyWaypoint []*Authorization // GatewayClass istio-waypoint, from the root namespace
	gateways      map[objectRef][]*Authorization
	services      map[objectRef][]*Authorization // Service and ServiceEntry references
	resources     []Resource                     // every policy with targetRefs, enforced or skipped
}

// objectRef is a namespaced name: a Gateway or a service.
type objectRef struct{ namespace, name string }

// add files a, whose ord is set, under each of its references that can attach.
func (x *waypointIndex) add(a *Authorization, rootNamespace string) {
	file := func(m *map[objectRef][]*Authorization, name string) {
		if *m == nil {
			*m = map[objectRef][]*Authorization{}
		}
		k := objectRef{a.Namespace, name}
		if l := (*m)[k]; len(l) == 0 || l[len(l)-1] != a {
			(*m)[k] = append(l, a)
		}
	}
	class := false
	for _, ref := range a.TargetRefs {
		switch kindOf(ref) {
		case refGateway:
			file(&x.gateways, ref.Name)
		case refService, refServiceEntry:
			file(&x.services, ref.Name)
		case refGatewayClass:
			if ref.Name == WaypointGatewayClass && a.Namespace == rootNamespace && !class {
				x.everyWaypoint = append(x.everyWaypoint, a)
				class = true
			}
		}
	}
}

// attachWarnings names the references of a waypoint policy that attach to nothing, as istiod would
// silently ignore them.
func attachWarnings(r *Resource, rootNamespace string, warn func(field, format string, args ...any) Warning) []Warning {
	var ws []Warning
	for _, ref := range r.AuthorizationPolicy.TargetRefs {
		if kindOf(ref) != refGatewayClass {
			continue
		}
		switch {
		case ref.Name != WaypointGatewayClass:
			ws = append(ws, warn("spec.targetRefs", "GatewayClass %s is not %s: that reference attaches to no waypoint", ref.Name, WaypointGatewayClass))
		case r.Namespace != rootNamespace:
			ws = append(ws, warn("spec.targetRefs", "GatewayClass %s applies only from the root namespace (%s): that reference attaches to no waypoint", ref.Name, rootNamespace))
		}
	}
	return ws
}

// refKind is what a targetRef names, by group and kind.
type refKind uint8

const (
	refUnsupported refKind = iota
	refGateway
	refGatewayClass
	refService
	refServiceEntry
)

// kindOf classifies a reference the way istiod matches it: an empty group is the core group.
func kindOf(ref TargetRef) refKind {
	group := ref.Group
	if group == "" {
		group = coreGroup
	}
	switch {
	case group == gatewayAPIGroup && ref.Kind == "Gateway":
		return refGateway
	case group == gatewayAPIGroup && ref.Kind == "GatewayClass":
		return refGatewayClass
	case group == coreGroup && ref.Kind == "Service":
		return refService
	case group == istioNetworkingGroup && ref.Kind == "ServiceEntry":
		return refServiceEntry
	}
	return refUnsupported
}

// groupKind is "group/Kind" for messages, with istiod's "core" for the empty group.
func groupKind(ref TargetRef) string {
	group := ref.Group
	if group == "" {
		group = coreGroup
	}
	return fmt.Sprintf("%s/%s", group, ref.Kind)
}
