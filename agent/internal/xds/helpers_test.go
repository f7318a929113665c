package xds

import (
	"net/netip"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Hand encoders of the workload API for tests, written from workload.proto and authorization.proto as istiod
// would send them. Each returns one encoded field (tag and value); cat joins fields into a message.

func cat(fields ...[]byte) []byte {
	var b []byte
	for _, f := range fields {
		b = append(b, f...)
	}
	return b
}

func fStr(num protowire.Number, s string) []byte {
	return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
}

func fBytes(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
}

func fUint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func fMsg(num protowire.Number, fields ...[]byte) []byte { return fBytes(num, cat(fields...)) }

func fIP(num protowire.Number, s string) []byte { return fBytes(num, netip.MustParseAddr(s).AsSlice()) }

// Workload API messages.

func workloadAddr(fields ...[]byte) []byte { return fMsg(addrWorkload, fields...) }
func serviceAddr(fields ...[]byte) []byte  { return fMsg(addrService, fields...) }

func portMsg(num protowire.Number, svc, target, proto uint64) []byte {
	return fMsg(num, fUint(portServicePort, svc), fUint(portTargetPort, target), fUint(portAppProtocol, proto))
}

// servicesEntry is one entry of Workload.services: key "ns/hostname" -> PortList.
func servicesEntry(key string, ports ...[]byte) []byte {
	return fMsg(wlServices, fStr(mapKey, key), fMsg(mapValue, ports...))
}

func gatewayHostname(num protowire.Number, ns, host string) []byte {
	return fMsg(num, fMsg(gwHostname, fStr(nhNamespace, ns), fStr(nhHostname, host)), fUint(gwHBONEMTLSPort, 15008))
}

func gatewayIP(num protowire.Number, network, ip string) []byte {
	return fMsg(num, fMsg(gwAddress, fStr(naNetwork, network), fIP(naAddress, ip)), fUint(gwHBONEMTLSPort, 15008))
}

func networkAddr(num protowire.Number, network, ip string) []byte {
	return fMsg(num, fStr(naNetwork, network), fIP(naAddress, ip))
}

// basicWorkload is a captured workload with one address, listed by service ns/hostname when given.
func basicWorkload(uid, ns, name, ip string, services ...string) []byte {
	fields := [][]byte{
		fStr(wlUID, uid), fStr(wlName, name), fStr(wlNamespace, ns), fIP(wlAddresses, ip),
		fUint(wlTunnelProtocol, tunnelHBONE), fStr(wlServiceAccount, name), fStr(wlNode, "node-1"),
	}
	for _, s := range services {
		fields = append(fields, servicesEntry(s))
	}
	return workloadAddr(fields...)
}

// Authorization messages.

func strMatch(num protowire.Number, kind protowire.Number, v string) []byte {
	if kind == smPresence {
		return fMsg(num, fMsg(smPresence))
	}
	return fMsg(num, fStr(kind, v))
}

func cidr(num protowire.Number, ip string, length uint64) []byte {
	return fMsg(num, fIP(cidrAddress, ip), fUint(cidrLength, length))
}

// allowFrom is an ALLOW policy with one rule: from principal.
func allowFrom(ns, name, principal string) []byte {
	return cat(fStr(authzName, name), fStr(authzNamespace, ns), fUint(authzScope, 2),
		fMsg(authzGroups, fMsg(groupRules, fMsg(rulesMatches, strMatch(mPrincipals, smExact, principal)))))
}

// Resources and responses.

func res(typeURL, name, version string, value []byte) *discoveryv3.Resource {
	return &discoveryv3.Resource{Name: name, Version: version, Resource: &anypb.Any{TypeUrl: typeURL, Value: value}}
}

func addrRes(name, version string, value []byte) *discoveryv3.Resource {
	return res(AddressType, name, version, value)
}

func authzRes(name, version string, value []byte) *discoveryv3.Resource {
	return res(AuthorizationType, name, version, value)
}

// wire encodes a response with the generated types and decodes it as the client does.
func wire(tb testing.TB, r *discoveryv3.DeltaDiscoveryResponse) *deltaResponse {
	tb.Helper()
	b, err := proto.Marshal(r)
	if err != nil {
		tb.Fatal(err)
	}
	d, err := decodeDeltaResponse(b)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}
