package discovery

import (
	"encoding/binary"
	"maps"
	"math"
	"net/netip"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ambient-agent/ambient-agent/agent/internal/pbwire"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// Limits of one record. A record over them is refused by SetLocal and dropped by receivers.
const (
	MaxRecordBytes = 64 << 10 // encoded size
	MaxWorkloads   = 256
	MaxServices    = 256

	maxAddresses       = 16 // per workload, service or waypoint
	maxLabels          = 64
	maxPorts           = 64
	maxServiceAccounts = 16
)

// Field numbers of the record format. Never reuse a number; add new ones.
const (
	recNode, recVersion, recAgentVersion, recWorkload, recService, recWaypoint, recAddress, recGateway protowire.Number = 1, 2, 3, 4, 5, 6, 7, 9

	wlName, wlNamespace, wlServiceAccount, wlTrustDomain, wlAddress, wlNetwork, wlTunnel, wlLabel, wlStatus, wlCapacity, wlUseWaypoint, wlPort protowire.Number = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
	wlCluster, wlRegion, wlZone, wlSubzone                                                                                                     protowire.Number = 13, 14, 15, 16

	labelKey, labelValue protowire.Number = 1, 2

	svcName, svcNamespace, svcHostname, svcAddress, svcPort, svcWorkload, svcUseWaypoint, svcServiceAccount protowire.Number = 1, 2, 3, 4, 5, 6, 7, 8

	portPort, portTarget, portAppProtocol protowire.Number = 1, 2, 3

	wpAddress, wpNamespace, wpServiceAccount, wpTrustDomain, wpForServiceAccount, wpName protowire.Number = 1, 2, 3, 4, 5, 6

	gwNetwork, gwAddress, gwNamespace, gwServiceAccount, gwTrustDomain protowire.Number = 1, 2, 3, 4, 5
)

// Wire values of enums, as istio.workload.TunnelProtocol and WorkloadStatus.
const (
	tunnelNone, tunnelHBONE        uint64 = 0, 1
	statusHealthy, statusUnhealthy uint64 = 0, 1
)

// encodeRecord writes r as it goes on the wire. Encoding is deterministic for a normalized record.
func encodeRecord(r *Record) []byte {
	b := appendHeader(make([]byte, 0, 256))
	b = pbwire.AppendNonEmpty(b, recNode, r.Node)
	b = pbwire.AppendNonZero(b, recVersion, r.Version)
	b = pbwire.AppendNonEmpty(b, recAgentVersion, r.AgentVersion)
	if r.Address.IsValid() {
		b = pbwire.AppendBytes(b, recAddress, binary.BigEndian.AppendUint16(r.Address.Addr().Unmap().AsSlice(), r.Address.Port()))
	}
	for _, w := range r.Workloads {
		b = pbwire.AppendMessage(b, recWorkload, appendWorkload(nil, w))
	}
	for i := range r.Services {
		b = pbwire.AppendMessage(b, recService, appendService(nil, &r.Services[i]))
	}
	if r.Waypoint != nil {
		b = pbwire.AppendMessage(b, recWaypoint, appendWaypoint(nil, r.Waypoint))
	}
	if g := r.Gateway; g != nil {
		gb := pbwire.AppendNonEmpty(nil, gwNetwork, g.Network)
		gb = appendAddrs(gb, gwAddress, g.Addresses)
		gb = pbwire.AppendNonEmpty(gb, gwNamespace, g.Namespace)
		gb = pbwire.AppendNonEmpty(gb, gwServiceAccount, g.ServiceAccount)
		gb = pbwire.AppendNonEmpty(gb, gwTrustDomain, g.TrustDomain)
		b = pbwire.AppendMessage(b, recGateway, gb)
	}
	return b
}

func appendWorkload(b []byte, w *state.Workload) []byte {
	b = pbwire.AppendNonEmpty(b, wlName, w.Name)
	b = pbwire.AppendNonEmpty(b, wlNamespace, w.Namespace)
	b = pbwire.AppendNonEmpty(b, wlServiceAccount, w.ServiceAccount)
	b = pbwire.AppendNonEmpty(b, wlTrustDomain, w.TrustDomain)
	b = appendAddrs(b, wlAddress, w.Addresses)
	b = pbwire.AppendNonEmpty(b, wlNetwork, w.Network)
	if w.Tunnel == state.TunnelHBONE {
		b = pbwire.AppendNonZero(b, wlTunnel, tunnelHBONE)
	}
	keys := slices.Sorted(maps.Keys(w.Labels))
	for _, k := range keys {
		b = pbwire.AppendMessage(b, wlLabel, pbwire.AppendNonEmpty(pbwire.AppendNonEmpty(nil, labelKey, k), labelValue, w.Labels[k]))
	}
	if !w.Healthy {
		b = pbwire.AppendNonZero(b, wlStatus, statusUnhealthy)
	}
	b = pbwire.AppendNonZero(b, wlCapacity, uint64(w.Capacity))
	b = pbwire.AppendNonEmpty(b, wlUseWaypoint, w.UseWaypoint)
	for _, p := range w.Ports {
		b = pbwire.AppendUint(b, wlPort, uint64(p))
	}
	b = pbwire.AppendNonEmpty(b, wlCluster, w.ClusterID)
	b = pbwire.AppendNonEmpty(b, wlRegion, w.Locality.Region)
	b = pbwire.AppendNonEmpty(b, wlZone, w.Locality.Zone)
	b = pbwire.AppendNonEmpty(b, wlSubzone, w.Locality.Subzone)
	return b
}

func appendService(b []byte, s *Service) []byte {
	b = pbwire.AppendNonEmpty(b, svcName, s.Name)
	b = pbwire.AppendNonEmpty(b, svcNamespace, s.Namespace)
	b = pbwire.AppendNonEmpty(b, svcHostname, s.Hostname)
	b = appendAddrs(b, svcAddress, s.Addresses)
	for _, p := range s.Ports {
		msg := pbwire.AppendNonZero(nil, portPort, uint64(p.Port))
		msg = pbwire.AppendNonZero(msg, portTarget, uint64(p.TargetPort))
		b = pbwire.AppendMessage(b, svcPort, pbwire.AppendNonEmpty(msg, portAppProtocol, p.AppProtocol))
	}
	for _, w := range s.Workloads {
		b = pbwire.AppendBytes(b, svcWorkload, []byte(w))
	}
	b = pbwire.AppendNonEmpty(b, svcUseWaypoint, s.UseWaypoint)
	for _, sa := range s.ServiceAccounts {
		b = pbwire.AppendBytes(b, svcServiceAccount, []byte(sa))
	}
	return b
}

func appendWaypoint(b []byte, w *Waypoint) []byte {
	b = appendAddrs(b, wpAddress, w.Addresses)
	b = pbwire.AppendNonEmpty(b, wpNamespace, w.Namespace)
	b = pbwire.AppendNonEmpty(b, wpServiceAccount, w.ServiceAccount)
	b = pbwire.AppendNonEmpty(b, wpTrustDomain, w.TrustDomain)
	b = pbwire.AppendNonEmpty(b, wpForServiceAccount, w.ForServiceAccount)
	return pbwire.AppendNonEmpty(b, wpName, w.Name)
}

func appendAddrs(b []byte, num protowire.Number, addrs []netip.Addr) []byte {
	for _, a := range addrs {
		b = pbwire.AppendBytes(b, num, a.Unmap().AsSlice())
	}
	return b
}

// decodeRecord reads and validates a record received from the network (not its proofs: verifyProofs does).
// Any error is a *dropError; on error nothing of the record is returned. Proofs come last: a field after the
// first proof would be unsigned.
func decodeRecord(raw []byte) (*Record, error) {
	if len(raw) > MaxRecordBytes {
		return nil, drop(reasonTooLarge, "record of %d bytes, the limit is %d", len(raw), MaxRecordBytes)
	}
	body, err := checkHeader(raw)
	if err != nil {
		return nil, err
	}
	r := &Record{}
	r.signedLen = len(raw)
	presize(body, r)
	err = eachField(body, func(f pbwire.Field) error {
		if len(r.Proofs) > 0 && f.Num != recProof {
			return drop(reasonMalformed, "field %d after the proofs", f.Num)
		}
		var err error
		switch f.Num {
		case recProof:
			if len(r.Proofs) == maxProofs {
				return drop(reasonTooLarge, "more than %d proofs", maxProofs)
			}
			if len(r.Proofs) == 0 {
				r.signedLen = fieldStart(raw, f)
			}
			var p Proof
			if p, err = decodeProof(f); err == nil {
				r.Proofs = append(r.Proofs, p)
			}
		case recNode:
			r.Node, err = f.Str()
		case recVersion:
			r.Version, err = f.Uint(math.MaxUint64)
		case recAgentVersion:
			r.AgentVersion, err = f.Str()
		case recWorkload:
			if len(r.Workloads) == MaxWorkloads {
				return drop(reasonTooLarge, "more than %d workloads", MaxWorkloads)
			}
			var w *state.Workload
			if w, err = decodeWorkload(f); err == nil {
				r.Workloads = append(r.Workloads, w)
			}
		case recService:
			if len(r.Services) == MaxServices {
				return drop(reasonTooLarge, "more than %d services", MaxServices)
			}
			var s Service
			if s, err = decodeService(f); err == nil {
				r.Services = append(r.Services, s)
			}
		case recWaypoint:
			r.Waypoint, err = decodeWaypoint(f)
		case recGateway:
			r.Gateway, err = decodeGateway(f)
		case recAddress:
			r.Address, err = decodeAddrPort(f)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := validateRecord(r); err != nil {
		return nil, &dropError{reason: reasonInvalid, err: err}
	}
	return r, nil
}

func decodeWorkload(f pbwire.Field) (*state.Workload, error) {
	w := &state.Workload{Tunnel: state.TunnelNone, Healthy: true}
	err := eachIn(f, func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case wlName:
			w.Name, err = f.Str()
		case wlNamespace:
			w.Namespace, err = f.Str()
		case wlServiceAccount:
			w.ServiceAccount, err = f.Str()
		case wlTrustDomain:
			w.TrustDomain, err = f.Str()
		case wlAddress:
			w.Addresses, err = appendAddr(w.Addresses, f)
		case wlNetwork:
			w.Network, err = f.Str()
		case wlTunnel:
			var t uint64
			if t, err = f.Uint(tunnelHBONE); err == nil && t == tunnelHBONE {
				w.Tunnel = state.TunnelHBONE
			}
		case wlLabel:
			if len(w.Labels) == maxLabels {
				return drop(reasonTooLarge, "more than %d labels", maxLabels)
			}
			err = decodeLabel(f, w)
		case wlStatus:
			var s uint64
			if s, err = f.Uint(statusUnhealthy); err == nil {
				w.Healthy = s == statusHealthy
			}
		case wlCapacity:
			var c uint64
			c, err = f.Uint(math.MaxUint32)
			w.Capacity = uint32(c)
		case wlUseWaypoint:
			w.UseWaypoint, err = f.Str()
		case wlCluster:
			w.ClusterID, err = f.Str()
		case wlRegion:
			w.Locality.Region, err = f.Str()
		case wlZone:
			w.Locality.Zone, err = f.Str()
		case wlSubzone:
			w.Locality.Subzone, err = f.Str()
		case wlPort:
			if len(w.Ports) == maxPorts {
				return drop(reasonTooLarge, "more than %d ports", maxPorts)
			}
			var p uint64
			if p, err = f.Uint(math.MaxUint16); err == nil {
				w.Ports = append(w.Ports, uint16(p))
			}
		}
		return err
	})
	return w, err
}

func decodeLabel(f pbwire.Field, w *state.Workload) error {
	var k, v string
	err := eachIn(f, func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case labelKey:
			k, err = f.Str()
		case labelValue:
			v, err = f.Str()
		}
		return err
	})
	if err != nil {
		return err
	}
	if w.Labels == nil {
		w.Labels = map[string]string{}
	}
	if _, dup := w.Labels[k]; dup {
		return drop(reasonInvalid, "label %q appears twice", k)
	}
	w.Labels[k] = v
	return nil
}

// presize gives r room for exactly the workloads and services body holds (up to the limits): a record is held
// as long as its node is up, and slices grown by appending keep on average a third of their room unused.
func presize(body []byte, r *Record) {
	nw, ns := 0, 0
	_ = pbwire.Each(body, func(f pbwire.Field) error { // what does not decode fails the decoding proper
		switch f.Num {
		case recWorkload:
			nw++
		case recService:
			ns++
		}
		return nil
	})
	if nw > 0 {
		r.Workloads = make([]*state.Workload, 0, min(nw, MaxWorkloads))
	}
	if ns > 0 {
		r.Services = make([]Service, 0, min(ns, MaxServices))
	}
}

func decodeService(f pbwire.Field) (Service, error) {
	var s Service
	err := eachIn(f, func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case svcName:
			s.Name, err = f.Str()
		case svcNamespace:
			s.Namespace, err = f.Str()
		case svcHostname:
			s.Hostname, err = f.Str()
		case svcAddress:
			s.Addresses, err = appendAddr(s.Addresses, f)
		case svcPort:
			if len(s.Ports) == maxPorts {
				return drop(reasonTooLarge, "more than %d ports", maxPorts)
			}
			var p ServicePort
			if p, err = decodePort(f); err == nil {
				s.Ports = append(s.Ports, p)
			}
		case svcWorkload:
			if len(s.Workloads) == MaxWorkloads {
				return drop(reasonTooLarge, "more than %d backing workloads", MaxWorkloads)
			}
			var w string
			if w, err = f.Str(); err == nil {
				s.Workloads = append(s.Workloads, w)
			}
		case svcUseWaypoint:
			s.UseWaypoint, err = f.Str()
		case svcServiceAccount:
			if len(s.ServiceAccounts) == maxServiceAccounts {
				return drop(reasonTooLarge, "more than %d service accounts", maxServiceAccounts)
			}
			var sa string
			if sa, err = f.Str(); err == nil {
				s.ServiceAccounts = append(s.ServiceAccounts, sa)
			}
		}
		return err
	})
	return s, err
}

func decodePort(f pbwire.Field) (ServicePort, error) {
	var p ServicePort
	err := eachIn(f, func(f pbwire.Field) error {
		var err error
		var v uint64
		switch f.Num {
		case portPort:
			v, err = f.Uint(math.MaxUint16)
			p.Port = uint16(v)
		case portTarget:
			v, err = f.Uint(math.MaxUint16)
			p.TargetPort = uint16(v)
		case portAppProtocol:
			p.AppProtocol, err = f.Str()
		}
		return err
	})
	return p, err
}

func decodeWaypoint(f pbwire.Field) (*Waypoint, error) {
	w := &Waypoint{}
	err := eachIn(f, func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case wpAddress:
			w.Addresses, err = appendAddr(w.Addresses, f)
		case wpNamespace:
			w.Namespace, err = f.Str()
		case wpServiceAccount:
			w.ServiceAccount, err = f.Str()
		case wpTrustDomain:
			w.TrustDomain, err = f.Str()
		case wpForServiceAccount:
			w.ForServiceAccount, err = f.Str()
		case wpName:
			w.Name, err = f.Str()
		}
		return err
	})
	return w, err
}

func decodeGateway(f pbwire.Field) (*Gateway, error) {
	g := &Gateway{}
	err := eachIn(f, func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case gwNetwork:
			g.Network, err = f.Str()
		case gwAddress:
			g.Addresses, err = appendAddr(g.Addresses, f)
		case gwNamespace:
			g.Namespace, err = f.Str()
		case gwServiceAccount:
			g.ServiceAccount, err = f.Str()
		case gwTrustDomain:
			g.TrustDomain, err = f.Str()
		}
		return err
	})
	return g, err
}

// fieldStart is the offset in raw of the field whose value f.B is (f.B aliases raw).
func fieldStart(raw []byte, f pbwire.Field) int {
	value := cap(raw) - cap(f.B)
	start := value - protowire.SizeVarint(uint64(len(f.B))) - protowire.SizeTag(f.Num)
	return min(max(start, 0), len(raw)) // a non-minimal tag makes a prefix no proof signs: dropped as bad_proof
}

// decodeAddrPort reads an address (4 or 16 bytes) followed by a big-endian port.
func decodeAddrPort(f pbwire.Field) (netip.AddrPort, error) {
	b, err := f.Bytes()
	if err != nil {
		return netip.AddrPort{}, err
	}
	if len(b) != 6 && len(b) != 18 {
		return netip.AddrPort{}, drop(reasonInvalid, "a node address of %d bytes", len(b))
	}
	a, _ := netip.AddrFromSlice(b[:len(b)-2])
	return netip.AddrPortFrom(a.Unmap(), binary.BigEndian.Uint16(b[len(b)-2:])), nil
}

// appendAddr decodes an address field: 4 or 16 bytes, as istio.workload.Workload.addresses.
func appendAddr(addrs []netip.Addr, f pbwire.Field) ([]netip.Addr, error) {
	if _, err := f.Bytes(); err != nil { // a wrong wire type is malformed even past the limit
		return nil, err
	}
	if len(addrs) == maxAddresses {
		return nil, drop(reasonTooLarge, "more than %d addresses", maxAddresses)
	}
	a, err := f.Addr()
	if err != nil {
		return nil, err
	}
	return append(addrs, a), nil
}
