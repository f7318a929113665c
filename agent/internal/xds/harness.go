//go:build scaleharness

package xds

import (
	"fmt"
	"net/netip"

	"google.golang.org/protobuf/encoding/protowire"
)

// The scale harness's side of the client (make bench-scale, docs/scale.md). Built only with the scaleharness tag.

// Apply takes one delta response (its protobuf encoding) as the client does from its stream: decoded, applied to
// the store and published, as a client that has its first full state.
func (c *Client) Apply(raw []byte) error {
	resp, err := decodeDeltaResponse(raw)
	if err != nil {
		return err
	}
	if _, rejected := c.store.apply(resp); len(rejected) > 0 {
		return fmt.Errorf("xds: %d resources refused, the first %s: %s", len(rejected), rejected[0].name, rejected[0].reason)
	}
	c.synced = true
	c.publish()
	return nil
}

// HarnessMesh is istiod's delta response with the Address resources of a cluster of n workloads behind n/20
// services of 20 endpoints each, in 50 namespaces (the shape of the scale harness's gossip meshes), the workload
// numbered unhealthy (-1: none) reported unhealthy.
func HarnessMesh(n, unhealthy int) []byte {
	var resources [][]byte
	for s := range n / 20 {
		ns, host := harnessService(s)
		vip := netip.AddrFrom4([4]byte{240, 1, byte(s >> 8), byte(s)})
		svc := hcat(hstr(svcName, fmt.Sprintf("svc-%d", s)), hstr(svcNamespace, ns), hstr(svcHostname, host),
			hmsg(svcAddresses, hstr(naNetwork, ""), hbyt(naAddress, vip.AsSlice())),
			hmsg(svcPorts, huvar(portServicePort, 80), huvar(portTargetPort, 8080)))
		resources = append(resources, harnessResource(ns+"/"+host, hmsg(addrService, svc)))
	}
	for i := range n {
		resources = append(resources, HarnessWorkload(i, i != unhealthy))
	}
	return harnessResponse(resources)
}

// HarnessWorkloadDelta is istiod's delta response with workload i of HarnessMesh alone, healthy or not.
func HarnessWorkloadDelta(i int, healthy bool) []byte {
	return harnessResponse([][]byte{HarnessWorkload(i, healthy)})
}

// HarnessRemoval is istiod's delta response that removes workload i of HarnessMesh.
func HarnessRemoval(i int) []byte {
	ns, _ := harnessService(i / 20)
	return hcat(hstr(respTypeURL, AddressType), hstr(respNonce, "n"), hstr(respRemoved, fmt.Sprintf("Kubernetes//Pod/%s/w-%d", ns, i)))
}

// HarnessWorkload is the Resource of workload i of HarnessMesh.
func HarnessWorkload(i int, healthy bool) []byte {
	s := i / 20
	ns, host := harnessService(s)
	uid := fmt.Sprintf("Kubernetes//Pod/%s/w-%d", ns, i)
	addr := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	status := uint64(0)
	if !healthy {
		status = 1
	}
	w := hcat(hstr(wlUID, uid), hstr(wlName, fmt.Sprintf("w-%d", i)), hstr(wlNamespace, ns), hbyt(wlAddresses, addr.AsSlice()),
		huvar(wlTunnelProtocol, tunnelHBONE), hstr(wlServiceAccount, fmt.Sprintf("sa-%d", i%10)), hstr(wlNode, fmt.Sprintf("node-%d", i/10)),
		hmsg(wlServices, hstr(mapKey, ns+"/"+host), hmsg(mapValue, hmsg(1, huvar(portServicePort, 80), huvar(portTargetPort, 8080)))),
		huvar(wlStatus, status))
	return harnessResource(uid, hmsg(addrWorkload, w))
}

func harnessService(s int) (namespace, hostname string) {
	namespace = fmt.Sprintf("ns-%d", s%50)
	return namespace, fmt.Sprintf("svc-%d.%s.svc.cluster.local", s, namespace)
}

func harnessResource(name string, address []byte) []byte {
	return hcat(hstr(resName, name), hstr(resVersion, "1"), hmsg(resResource, hstr(anyTypeURL, AddressType), hbyt(anyValue, address)))
}

func harnessResponse(resources [][]byte) []byte {
	b := hcat(hstr(respTypeURL, AddressType), hstr(respNonce, "n"))
	for _, r := range resources {
		b = append(b, hbyt(respResources, r)...)
	}
	return b
}

func hcat(fields ...[]byte) []byte {
	var b []byte
	for _, f := range fields {
		b = append(b, f...)
	}
	return b
}

func hstr(num protowire.Number, s string) []byte {
	return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
}

func hbyt(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
}

func huvar(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func hmsg(num protowire.Number, fields ...[]byte) []byte { return hbyt(num, hcat(fields...)) }
