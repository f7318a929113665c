package xds

import (
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// FuzzDecode feeds arbitrary bytes to both decoders and to the view: a resource is taken or refused with an
// error, never a panic, and whatever is taken builds a view.
func FuzzDecode(f *testing.F) {
	for _, seed := range [][]byte{
		basicWorkload("w1", "ns", "a", "10.0.0.1", "ns/svc.ns.svc.cluster.local"),
		workloadAddr(fStr(wlUID, "u"), fStr(wlName, "n"), fStr(wlNamespace, "ns"), fIP(wlAddresses, "fd00::1"),
			gatewayHostname(wlWaypoint, "ns", "wp.ns.svc"), gatewayIP(wlNetworkGateway, "net", "10.9.9.9"),
			servicesEntry("ns/h", portMsg(portListPorts, 80, 8080, 1)), fMsg(wlCapacity, fUint(wrapperValue, 2))),
		serviceAddr(fStr(svcName, "s"), fStr(svcNamespace, "ns"), fStr(svcHostname, "h"),
			networkAddr(svcAddresses, "", "10.96.0.1"), portMsg(svcPorts, 80, 0, 2), gatewayIP(svcWaypoint, "", "10.0.0.9")),
		allowFrom("ns", "p", "cluster.local/ns/a/sa/b"),
		cat(fStr(authzName, "p"), fStr(authzNamespace, "ns"), fUint(authzAction, 1), fMsg(authzGroups, fMsg(groupRules,
			fMsg(rulesMatches, cidr(mSourceIPs, "10.0.0.0", 8), fUint(mDestinationPorts, 22), strMatch(mNamespaces, smPresence, ""))))),
		{0x0a, 0xff, 0x01},
		{0x80},
		nil,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := newStore()
		s.apply(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Resources: []*discoveryv3.Resource{
			addrRes("a", "1", b), addrRes("w1", "1", basicWorkload("w1", "ns", "a", "10.0.0.1")),
		}})
		s.apply(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: AuthorizationType, Resources: []*discoveryv3.Resource{authzRes("p", "", b)}})
		build(s, "")
		build(s, "net")
	})
}
