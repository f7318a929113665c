package xds

import (
	"fmt"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// BenchmarkBuild measures computing the view of a large cluster (10,000 workloads behind 1,000 services), which
// the client does after each change.
func BenchmarkBuild(b *testing.B) {
	s := newStore()
	var rs []*discoveryv3.Resource
	for i := range 1000 {
		host := fmt.Sprintf("svc-%d.ns.svc.cluster.local", i)
		rs = append(rs, addrRes("ns/"+host, "1", serviceAddr(fStr(svcName, fmt.Sprintf("svc-%d", i)), fStr(svcNamespace, "ns"),
			fStr(svcHostname, host), networkAddr(svcAddresses, "", fmt.Sprintf("10.96.%d.%d", i/256, i%256)), portMsg(svcPorts, 80, 8080, 1))))
	}
	for i := range 10000 {
		uid := fmt.Sprintf("Kubernetes//Pod/ns/pod-%d", i)
		rs = append(rs, addrRes(uid, "1", basicWorkload(uid, "ns", fmt.Sprintf("pod-%d", i),
			fmt.Sprintf("10.%d.%d.%d", 1+i/65536, i/256%256, i%256), fmt.Sprintf("ns/svc-%d.ns.svc.cluster.local", i%1000))))
	}
	if _, rejected := s.apply(wire(b, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Resources: rs})); len(rejected) > 0 {
		b.Fatal(rejected)
	}
	b.ReportAllocs()
	for b.Loop() {
		if u := build(s, ""); len(u.Workloads()) != 10000 {
			b.Fatal(len(u.Workloads()))
		}
	}
}
