package xds

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
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
		s.apply(wire(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Resources: []*discoveryv3.Resource{
			addrRes("a", "1", b), addrRes("w1", "1", basicWorkload("w1", "ns", "a", "10.0.0.1")),
		}}))
		s.apply(wire(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AuthorizationType, Resources: []*discoveryv3.Resource{authzRes("p", "", b)}}))
		build(s, "")
		build(s, "net")
	})
}

// FuzzDecodeResponse feeds arbitrary bytes to the envelope decoder, and what it takes to the store and the view:
// an error or a response, never a panic. When the generated types read the bytes too, both agree.
func FuzzDecodeResponse(f *testing.F) {
	for _, r := range []*discoveryv3.DeltaDiscoveryResponse{
		{TypeUrl: AddressType, Nonce: "n1", SystemVersionInfo: "v", Resources: []*discoveryv3.Resource{
			addrRes("w1", "1", basicWorkload("w1", "ns", "a", "10.0.0.1")), {Name: "w2"},
		}, RemovedResources: []string{"w3"}},
		{TypeUrl: AuthorizationType, Nonce: "n2", Resources: []*discoveryv3.Resource{
			authzRes("ns/p", "2", allowFrom("ns", "p", "cluster.local/ns/a/sa/b")),
		}},
		{TypeUrl: "type.googleapis.com/other", Resources: []*discoveryv3.Resource{{Name: "x", Aliases: []string{"y"}}}},
	} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(fMsg(respResources, fMsg(resResource, fStr(anyTypeURL, "a")), fMsg(resResource, fBytes(anyValue, []byte{1}))))
	f.Add([]byte{0x12, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := decodeDeltaResponse(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "DeltaDiscoveryResponse: ") {
				t.Fatalf("error %q", err)
			}
			return
		}
		if gen := (&discoveryv3.DeltaDiscoveryResponse{}); proto.Unmarshal(b, gen) == nil {
			sameResponse(t, resp, gen)
		}
		s := newStore()
		s.apply(resp)
		build(s, "")
	})
}

func sameResponse(t *testing.T, r *deltaResponse, g *discoveryv3.DeltaDiscoveryResponse) {
	t.Helper()
	if r.typeURL != g.TypeUrl || r.nonce != g.Nonce || r.systemVersion != g.SystemVersionInfo ||
		!slices.Equal(r.removed, g.RemovedResources) || len(r.resources) != len(g.Resources) {
		t.Fatalf("decoded %+v, generated %v", r, g)
	}
	for i, gr := range g.Resources {
		rr := r.resources[i]
		if rr.name != gr.Name || rr.version != gr.Version || rr.hasPayload != (gr.Resource != nil) ||
			rr.payloadType != gr.GetResource().GetTypeUrl() || !bytes.Equal(rr.payload, gr.GetResource().GetValue()) {
			t.Fatalf("resource %d: decoded %+v, generated %v", i, rr, gr)
		}
	}
}
