package xds

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"istio.io/istio/pkg/workloadapi"

	"github.com/ambient-agent/ambient-agent/agent/internal/proxy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/xds"
)

// craftedServer is a delta ADS server that sends, to every stream, the
// Address resources it holds (built with Istio's own workloadapi types), and
// no policy: what istiod's discovery server cannot be made to send (a drained
// workload, enum values of a later Istio).
type craftedServer struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	addresses []*discoveryv3.Resource
}

func (s *craftedServer) DeltaAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	sent := map[string]bool{}
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if sent[req.TypeUrl] || req.ResponseNonce != "" {
			continue // an ACK or NACK
		}
		sent[req.TypeUrl] = true
		resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: req.TypeUrl, Nonce: req.TypeUrl}
		if req.TypeUrl == xds.AddressType {
			resp.Resources = s.addresses
		}
		if err := stream.Send(resp); err != nil {
			return nil
		}
	}
}

func addressResource(t *testing.T, name string, a *workloadapi.Address) *discoveryv3.Resource {
	t.Helper()
	b, err := proto.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	return &discoveryv3.Resource{Name: name, Version: "1", Resource: &anypb.Any{TypeUrl: xds.AddressType, Value: b}}
}

// A drained endpoint (capacity 0) is never chosen, and a workload or service
// with enum values this agent does not know (a later Istio's workload type
// and app protocol) is kept, as ztunnel keeps it.
func TestCraftedWorkloadAPI(t *testing.T) {
	const host = "crafted.ext.svc.cluster.local"
	workload := func(uid, ip string, capacity *wrapperspb.UInt32Value, wt workloadapi.WorkloadType) *workloadapi.Address {
		return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{
			Uid: uid, Name: uid, Namespace: "ext", ServiceAccount: uid, Addresses: [][]byte{netip.MustParseAddr(ip).AsSlice()},
			TunnelProtocol: workloadapi.TunnelProtocol_HBONE, Capacity: capacity, WorkloadType: wt,
			Services: map[string]*workloadapi.PortList{"ext/" + host: {Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}}}},
		}}}
	}
	srv := &craftedServer{addresses: []*discoveryv3.Resource{
		addressResource(t, "drained", workload("drained", "10.50.0.1", wrapperspb.UInt32(0), workloadapi.WorkloadType_POD)),
		addressResource(t, "later", workload("later", "10.50.0.2", nil, workloadapi.WorkloadType(42))),
		addressResource(t, "ext/"+host, &workloadapi.Address{Type: &workloadapi.Address_Service{Service: &workloadapi.Service{
			Name: "crafted", Namespace: "ext", Hostname: host,
			Addresses: []*workloadapi.NetworkAddress{{Address: netip.MustParseAddr("10.96.9.1").AsSlice()}},
			Ports:     []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080, AppProtocol: workloadapi.AppProtocol(42)}},
		}}}),
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	go g.Serve(ln)
	t.Cleanup(g.Stop)

	c, _ := connect(t, ln.Addr().String())
	u := await(t, c, "both workloads and the service", func(u xds.Update) bool {
		return workloadNamed(u, "ext", "drained") != nil && workloadNamed(u, "ext", "later") != nil && len(endpoints(serviceNamed(u, "ext", "crafted"))) == 2
	})
	if w := workloadNamed(u, "ext", "drained"); w.Capacity != 0 {
		t.Fatalf("drained workload's capacity %d, want 0", w.Capacity)
	}
	host0 := hostWorkload()
	snap := state.Build(1, state.Input{Workloads: append(slices.Clone(u.Workloads()), host0), Services: u.Services})
	for range 50 {
		r := proxy.DecideOutboundFrom(snap, host0, netip.AddrPortFrom(host0.Addresses[0], 40000), netip.MustParseAddrPort("10.96.9.1:80"))
		if r.Kind != proxy.RouteHBONE || r.Target != netip.MustParseAddrPort("10.50.0.2:8080") {
			t.Fatalf("route %+v, want the one endpoint that is not drained", r)
		}
	}
}
