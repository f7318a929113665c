package xds

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"

	"github.com/ambient-agent/ambient-agent/agent/internal/pbwire"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// Field numbers of istio.workload (workload.proto). Never renumbered upstream; new fields get new numbers.
const (
	// Address: oneof type { Workload workload = 1; Service service = 2; }
	addrWorkload, addrService = 1, 2

	// Workload
	wlName, wlNamespace, wlAddresses, wlNetwork, wlTunnelProtocol     = 1, 2, 3, 4, 5
	wlTrustDomain, wlServiceAccount, wlWaypoint, wlNode               = 6, 7, 8, 9
	wlCanonicalName, wlCanonicalRevision, wlWorkloadType, wlWorkloadN = 10, 11, 12, 13
	wlNativeTunnel, wlAuthorizationPolicies, wlStatus, wlClusterID    = 14, 16, 17, 18
	wlNetworkGateway, wlUID, wlHostname, wlServices, wlAppTunnel      = 19, 20, 21, 22, 23
	wlLocality, wlCapacity                                            = 24, 27 // Locality; google.protobuf.UInt32Value
	// 25 network_mode, 26 extensions: not used by the agent, skipped.
	// Locality
	locRegion, locZone, locSubzone = 1, 2, 3

	// Workload.services is map<string, PortList>: entries with key = 1, value = 2; PortList: repeated Port ports = 1.
	mapKey, mapValue = 1, 2
	portListPorts    = 1

	// Port
	portServicePort, portTargetPort, portAppProtocol = 1, 2, 3

	// Service
	svcName, svcNamespace, svcHostname, svcAddresses, svcPorts = 1, 2, 3, 4, 5
	svcSubjectAltNames, svcWaypoint, svcLoadBalancing          = 6, 7, 8
	svcWeightedWaypoints, svcVisibility                        = 13, 14
	// 9 ip_families, 10 extensions, 11 canonical, 12 ingress_use_waypoint: not used by the agent, skipped.
	// LoadBalancing
	lbRoutingPreference, lbMode, lbHealthPolicy = 1, 2, 3
	// WeightedWaypoint
	wwDestination, wwWeight = 1, 2

	// GatewayAddress: oneof destination { NamespacedHostname hostname = 1; NetworkAddress address = 2; }
	gwHostname, gwAddress, gwHBONEMTLSPort = 1, 2, 3
	// NamespacedHostname
	nhNamespace, nhHostname = 1, 2
	// NetworkAddress
	naNetwork, naAddress, naLength = 1, 2, 3
	// google.protobuf.UInt32Value
	wrapperValue = 1
)

// Enum values of workload.proto.
const (
	tunnelNone, tunnelHBONE, tunnelLegacyIstioMTLS = 0, 1, 2 // TunnelProtocol
	statusHealthy, statusUnhealthy                 = 0, 1    // WorkloadStatus
	workloadTypeLast                               = 3       // WorkloadType: DEPLOYMENT, CRONJOB, POD, JOB
	appProtocolLast                                = 5       // AppProtocol: UNKNOWN, HTTP11, HTTP2, GRPC, TCP, TLS
	visibilityNamespace                            = 1       // Service.Visibility: PUBLIC, NAMESPACE
	healthAllowAll                                 = 1       // LoadBalancing.HealthPolicy: ONLY_HEALTHY, ALLOW_ALL
)

// LoadBalancing.Mode and LoadBalancing.Scope, by value; a value not listed (a newer istiod's) reads as
// UNSPECIFIED, as ztunnel reads it.
var (
	lbModes  = map[uint64]state.LBMode{1: state.LBStrict, 2: state.LBFailover, 3: state.LBPassthrough}
	lbScopes = map[uint64]state.Scope{1: state.ScopeRegion, 2: state.ScopeZone, 3: state.ScopeSubzone,
		4: state.ScopeNode, 5: state.ScopeCluster, 6: state.ScopeNetwork}
)

// workload is an istio.workload.Workload as received: the fields the agent uses.
type workload struct {
	UID, Name, Namespace, Hostname string
	Addresses                      []netip.Addr
	Network, TrustDomain           string
	ServiceAccount, Node           string
	Tunnel                         uint64
	NativeTunnel                   bool
	Waypoint, NetworkGateway       *gatewayAddress
	CanonicalName                  string
	CanonicalRevision              string
	WorkloadName                   string
	WorkloadType                   uint64
	Services                       map[string][]port // "namespace/hostname" -> the workload's port mapping
	AuthorizationPolicies          []string          // "namespace/name"
	Status                         uint64
	ClusterID                      string
	Capacity                       uint32 // 1 when absent, as in ztunnel
	Locality                       state.Locality
}

// service is an istio.workload.Service as received.
type service struct {
	Name, Namespace, Hostname string
	Addresses                 []networkAddress
	Ports                     []port
	SubjectAltNames           []string
	Waypoint                  *gatewayAddress
	LoadBalancing             *state.LoadBalancing
	Weighted                  []weightedWaypoint
	NamespaceOnly             bool // visibility NAMESPACE
}

type weightedWaypoint struct {
	Destination *gatewayAddress
	Weight      uint32
}

type port struct {
	ServicePort, TargetPort uint16
	AppProtocol             uint64
}

type networkAddress struct {
	Network string
	Addr    netip.Addr
	// Bits is the prefix length of a CIDR VIP (NetworkAddress.length); 0 when absent (or 0, which no VIP
	// range is): a host address.
	Bits int
}

// prefix is the address as a CIDR, and whether it is one (shorter than a host address).
func (a networkAddress) prefix() (netip.Prefix, bool) {
	if a.Bits <= 0 || a.Bits >= a.Addr.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a.Addr, a.Bits).Masked(), true
}

// gatewayAddress is a waypoint or network gateway reference: a service by namespace and hostname, or an address.
type gatewayAddress struct {
	Namespace, Hostname string // set for the hostname form
	Address             networkAddress
	HBONEPort           uint16
}

// address is the decoded istio.workload.Address: exactly one of its fields is set.
type address struct {
	Workload *workload
	Service  *service
}

// decodeAddress reads one istio.workload.Address resource. It returns an error, never panics, on any input.
func decodeAddress(b []byte) (*address, error) {
	var a address
	err := pbwire.Each(b, func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case addrWorkload: // oneof: the last one on the wire wins
			a.Service = nil
			a.Workload, err = decodeWorkload(f)
		case addrService:
			a.Workload = nil
			a.Service, err = decodeService(f)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	switch {
	case a.Workload != nil:
		err = a.Workload.validate()
	case a.Service != nil:
		err = a.Service.validate()
	default:
		err = errors.New("an Address with neither a workload nor a service")
	}
	if err != nil {
		return nil, err
	}
	return &a, nil
}

func decodeWorkload(f pbwire.Field) (*workload, error) {
	w := &workload{Capacity: 1}
	err := f.Each(func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case wlUID:
			w.UID, err = f.Str()
		case wlName:
			w.Name, err = f.Str()
		case wlNamespace:
			w.Namespace, err = f.Str()
		case wlAddresses:
			var a netip.Addr
			if a, err = f.Addr(); err == nil {
				w.Addresses = append(w.Addresses, a)
			}
		case wlHostname:
			w.Hostname, err = f.Str()
		case wlNetwork:
			w.Network, err = f.Str()
		case wlTunnelProtocol:
			w.Tunnel, err = enum(f, "tunnel protocol", tunnelLegacyIstioMTLS)
		case wlTrustDomain:
			w.TrustDomain, err = f.Str()
		case wlServiceAccount:
			w.ServiceAccount, err = f.Str()
		case wlWaypoint:
			w.Waypoint, err = decodeGatewayAddress(f)
		case wlNetworkGateway:
			w.NetworkGateway, err = decodeGatewayAddress(f)
		case wlNode:
			w.Node, err = f.Str()
		case wlCanonicalName:
			w.CanonicalName, err = f.Str()
		case wlCanonicalRevision:
			w.CanonicalRevision, err = f.Str()
		case wlWorkloadType:
			w.WorkloadType, err = lenientEnum(f)
			if w.WorkloadType > workloadTypeLast {
				w.WorkloadType = 0
			}
		case wlWorkloadN:
			w.WorkloadName, err = f.Str()
		case wlNativeTunnel:
			w.NativeTunnel, err = f.Bool()
		case wlServices:
			err = w.decodeServiceEntry(f)
		case wlAuthorizationPolicies:
			var p string
			if p, err = f.Str(); err == nil {
				w.AuthorizationPolicies = append(w.AuthorizationPolicies, p)
			}
		case wlStatus:
			w.Status, err = enum(f, "workload status", statusUnhealthy)
		case wlClusterID:
			w.ClusterID, err = f.Str()
		case wlCapacity:
			w.Capacity, err = decodeUInt32Value(f)
		case wlLocality:
			w.Locality, err = decodeLocality(f)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("workload: %w", err)
	}
	return w, nil
}

// decodeServiceEntry reads one entry of Workload.services (map<string, PortList>).
func (w *workload) decodeServiceEntry(f pbwire.Field) error {
	var key string
	var ports []port
	err := f.Each(func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case mapKey:
			key, err = f.Str()
		case mapValue:
			var pl []byte
			if pl, err = f.Bytes(); err != nil {
				return err
			}
			err = pbwire.Each(pl, func(f pbwire.Field) error {
				if f.Num != portListPorts {
					return nil
				}
				p, err := decodePort(f)
				ports = append(ports, p)
				return err
			})
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("services: %w", err)
	}
	if w.Services == nil {
		w.Services = map[string][]port{}
	}
	w.Services[key] = ports
	return nil
}

func decodePort(f pbwire.Field) (port, error) {
	var p port
	err := f.Each(func(f pbwire.Field) error {
		var err error
		var v uint64
		switch f.Num {
		case portServicePort:
			v, err = f.Uint(math.MaxUint16)
			p.ServicePort = uint16(v)
		case portTargetPort:
			v, err = f.Uint(math.MaxUint16)
			p.TargetPort = uint16(v)
		case portAppProtocol:
			p.AppProtocol, err = lenientEnum(f)
			if p.AppProtocol > appProtocolLast {
				p.AppProtocol = 0 // UNKNOWN: detected, not declared
			}
		}
		return err
	})
	if err != nil {
		return p, fmt.Errorf("port: %w", err)
	}
	return p, nil
}

func decodeService(f pbwire.Field) (*service, error) {
	s := &service{}
	err := f.Each(func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case svcName:
			s.Name, err = f.Str()
		case svcNamespace:
			s.Namespace, err = f.Str()
		case svcHostname:
			s.Hostname, err = f.Str()
		case svcAddresses:
			var a networkAddress
			if a, err = decodeNetworkAddress(f); err == nil {
				s.Addresses = append(s.Addresses, a)
			}
		case svcPorts:
			var p port
			if p, err = decodePort(f); err == nil {
				s.Ports = append(s.Ports, p)
			}
		case svcSubjectAltNames:
			var san string
			if san, err = f.Str(); err == nil {
				s.SubjectAltNames = append(s.SubjectAltNames, san)
			}
		case svcWaypoint:
			s.Waypoint, err = decodeGatewayAddress(f)
		case svcLoadBalancing:
			s.LoadBalancing, err = decodeLoadBalancing(f)
		case svcWeightedWaypoints:
			var ww weightedWaypoint
			if ww, err = decodeWeightedWaypoint(f); err == nil {
				s.Weighted = append(s.Weighted, ww)
			}
		case svcVisibility:
			var v uint64
			v, err = lenientEnum(f)
			s.NamespaceOnly = v == visibilityNamespace
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	return s, nil
}

func decodeLocality(f pbwire.Field) (state.Locality, error) {
	var l state.Locality
	err := f.Each(func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case locRegion:
			l.Region, err = f.Str()
		case locZone:
			l.Zone, err = f.Str()
		case locSubzone:
			l.Subzone, err = f.Str()
		}
		return err
	})
	if err != nil {
		return l, fmt.Errorf("locality: %w", err)
	}
	return l, nil
}

func decodeLoadBalancing(f pbwire.Field) (*state.LoadBalancing, error) {
	lb := &state.LoadBalancing{}
	err := f.Each(func(f pbwire.Field) error {
		var vs []uint32
		var v uint64
		var err error
		switch f.Num {
		case lbRoutingPreference: // repeated enum: packed or not
			if vs, err = uints(f, nil); err == nil {
				for _, v := range vs {
					if scope, ok := lbScopes[uint64(v)]; ok {
						lb.Preference = append(lb.Preference, scope)
					}
				}
			}
		case lbMode:
			v, err = lenientEnum(f)
			lb.Mode = lbModes[v]
		case lbHealthPolicy:
			v, err = lenientEnum(f)
			lb.AllowAll = v == healthAllowAll
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load balancing: %w", err)
	}
	return lb, nil
}

func decodeWeightedWaypoint(f pbwire.Field) (weightedWaypoint, error) {
	var ww weightedWaypoint
	err := f.Each(func(f pbwire.Field) error {
		var err error
		var v uint64
		switch f.Num {
		case wwDestination:
			ww.Destination, err = decodeGatewayAddress(f)
		case wwWeight:
			v, err = f.Uint(math.MaxUint32)
			ww.Weight = uint32(v)
		}
		return err
	})
	if err == nil && ww.Destination == nil {
		err = errors.New("no destination")
	}
	if err != nil {
		return ww, fmt.Errorf("weighted waypoint: %w", err)
	}
	return ww, nil
}

func decodeGatewayAddress(f pbwire.Field) (*gatewayAddress, error) {
	g := &gatewayAddress{}
	err := f.Each(func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case gwHostname:
			g.Address = networkAddress{}
			var nh []byte
			if nh, err = f.Bytes(); err != nil {
				return err
			}
			g.Namespace, g.Hostname = "", ""
			err = pbwire.Each(nh, func(f pbwire.Field) error {
				var err error
				switch f.Num {
				case nhNamespace:
					g.Namespace, err = f.Str()
				case nhHostname:
					g.Hostname, err = f.Str()
				}
				return err
			})
		case gwAddress:
			g.Namespace, g.Hostname = "", ""
			g.Address, err = decodeNetworkAddress(f)
		case gwHBONEMTLSPort:
			var v uint64
			v, err = f.Uint(math.MaxUint16)
			g.HBONEPort = uint16(v)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("gateway address: %w", err)
	}
	if g.Hostname == "" && !g.Address.Addr.IsValid() {
		return nil, errors.New("gateway address: neither a hostname nor an address")
	}
	return g, nil
}

func decodeNetworkAddress(f pbwire.Field) (networkAddress, error) {
	var a networkAddress
	err := f.Each(func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case naNetwork:
			a.Network, err = f.Str()
		case naAddress:
			a.Addr, err = f.Addr()
		case naLength:
			var v uint64
			v, err = f.Uint(128)
			a.Bits = int(v)
		}
		return err
	})
	if err == nil && !a.Addr.IsValid() {
		err = errors.New("no address")
	}
	if err == nil && a.Bits > a.Addr.BitLen() {
		err = fmt.Errorf("prefix length %d for %s", a.Bits, a.Addr)
	}
	if err != nil {
		return a, fmt.Errorf("network address: %w", err)
	}
	return a, nil
}

func decodeUInt32Value(f pbwire.Field) (uint32, error) {
	var v uint64
	err := f.Each(func(f pbwire.Field) error {
		var err error
		if f.Num == wrapperValue {
			v, err = f.Uint(math.MaxUint32)
		}
		return err
	})
	return uint32(v), err
}

// validate rejects what ztunnel rejects, and what the agent could not route by.
func (w *workload) validate() error {
	switch {
	case w.UID == "":
		return errors.New("workload: no uid")
	case w.Name == "" || w.Namespace == "":
		return fmt.Errorf("workload %s: no name or namespace", w.UID)
	}
	for key := range w.Services {
		if ns, host, ok := strings.Cut(key, "/"); !ok || ns == "" || host == "" {
			return fmt.Errorf("workload %s: service key %q is not namespace/hostname", w.UID, key)
		}
	}
	return nil
}

func (s *service) validate() error {
	if s.Namespace == "" || s.Hostname == "" {
		return fmt.Errorf("service %q: no namespace or hostname", s.Name)
	}
	return nil
}

// key is how workloads refer to the service (their services map) and istiod names its resource.
func (s *service) key() string { return s.Namespace + "/" + s.Hostname }
