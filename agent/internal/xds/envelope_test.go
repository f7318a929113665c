package xds

import (
	"reflect"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// The hand encoder writes what the generated types read, field for field.
func TestRequestMatchesGenerated(t *testing.T) {
	for name, tc := range map[string]struct {
		req  *deltaRequest
		want *discoveryv3.DeltaDiscoveryRequest
	}{
		"subscription": {
			req: &deltaRequest{
				node: &node{id: "ztunnel~1.1.1.1~vm.ns~ns.svc.cluster.local", userAgentName: "ambient-agent",
					metadata: map[string]string{"NAME": "vm", "CLUSTER_ID": "c1", "EMPTY": ""}},
				typeURL: AddressType, subscribe: []string{"*", ""},
				initialVersions: map[string]string{"w1": "v1", "ns/svc": "", "": "v0"},
			},
			want: &discoveryv3.DeltaDiscoveryRequest{
				Node: &corev3.Node{Id: "ztunnel~1.1.1.1~vm.ns~ns.svc.cluster.local", UserAgentName: "ambient-agent",
					Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
						"NAME": structpb.NewStringValue("vm"), "CLUSTER_ID": structpb.NewStringValue("c1"),
						"EMPTY": structpb.NewStringValue(""),
					}}},
				TypeUrl: AddressType, ResourceNamesSubscribe: []string{"*", ""},
				InitialResourceVersions: map[string]string{"w1": "v1", "ns/svc": "", "": "v0"},
			},
		},
		"ack": {
			req:  &deltaRequest{typeURL: AuthorizationType, responseNonce: "n1"},
			want: &discoveryv3.DeltaDiscoveryRequest{TypeUrl: AuthorizationType, ResponseNonce: "n1"},
		},
		"nack": {
			req: &deltaRequest{typeURL: AddressType, responseNonce: "n2",
				errorDetail: &rpcStatus{code: 3, message: "w1: bad \xff"}},
			want: &discoveryv3.DeltaDiscoveryRequest{TypeUrl: AddressType, ResponseNonce: "n2",
				ErrorDetail: &statuspb.Status{Code: 3, Message: "w1: bad \uFFFD"}},
		},
		"negative code, empty detail": {
			req:  &deltaRequest{errorDetail: &rpcStatus{code: -2}},
			want: &discoveryv3.DeltaDiscoveryRequest{ErrorDetail: &statuspb.Status{Code: -2}},
		},
		"empty": {req: &deltaRequest{}, want: &discoveryv3.DeltaDiscoveryRequest{}},
	} {
		t.Run(name, func(t *testing.T) {
			got := &discoveryv3.DeltaDiscoveryRequest{}
			if err := proto.Unmarshal(tc.req.marshal(), got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Fatalf("decoded as\n%v\nwant\n%v", got, tc.want)
			}
			if len(got.ProtoReflect().GetUnknown()) != 0 {
				t.Fatalf("unknown fields: %x", got.ProtoReflect().GetUnknown())
			}
		})
	}
}

// The hand decoder reads what the generated types write, and skips the fields it does not use.
func TestDecodeResponseMatchesGenerated(t *testing.T) {
	cp := &corev3.ControlPlane{Identifier: "istiod-1"}
	b, err := proto.Marshal(&discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: "2025-01-01T00:00:00Z/1",
		TypeUrl:           AddressType,
		Nonce:             "n1",
		Resources: []*discoveryv3.Resource{
			{Name: "w1", Version: "v1", Aliases: []string{"alias"}, Ttl: durationpb.New(5e9),
				Resource:     &anypb.Any{TypeUrl: AddressType, Value: []byte{1, 2, 3}},
				CacheControl: &discoveryv3.Resource_CacheControl{DoNotCache: true},
				ResourceName: &discoveryv3.ResourceName{Name: "w1"},
				Metadata:     &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"a": {}}}},
			{Name: "w2", Resource: &anypb.Any{}},
			{Name: "w3"},
		},
		RemovedResources:     []string{"w4", ""},
		RemovedResourceNames: []*discoveryv3.ResourceName{{Name: "w4"}},
		ControlPlane:         cp,
		ResourceErrors:       []*discoveryv3.ResourceError{{ResourceName: &discoveryv3.ResourceName{Name: "x"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeDeltaResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := &deltaResponse{
		systemVersion: "2025-01-01T00:00:00Z/1", typeURL: AddressType, nonce: "n1",
		resources: []resource{
			{name: "w1", version: "v1", hasPayload: true, payloadType: AddressType, payload: []byte{1, 2, 3}},
			{name: "w2", hasPayload: true},
			{name: "w3"},
		},
		removed: []string{"w4", ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, want)
	}
}

// A repeated message field merges, as protobuf does: the last type_url and value win.
func TestDecodeResponseMergesRepeatedAny(t *testing.T) {
	b := fMsg(respResources, fStr(resName, "w1"),
		fMsg(resResource, fStr(anyTypeURL, "a"), fBytes(anyValue, []byte{1})),
		fMsg(resResource, fStr(anyTypeURL, AddressType)))
	got, err := decodeDeltaResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	gen := &discoveryv3.DeltaDiscoveryResponse{}
	if err := proto.Unmarshal(b, gen); err != nil {
		t.Fatal(err)
	}
	r, g := got.resources[0], gen.Resources[0].Resource
	if r.payloadType != g.TypeUrl || string(r.payload) != string(g.Value) {
		t.Fatalf("merged as %q %x, generated %q %x", r.payloadType, r.payload, g.TypeUrl, g.Value)
	}
}

// Bad bytes are an error that says where, never a panic.
func TestDecodeResponseMalformed(t *testing.T) {
	for name, tc := range map[string]struct {
		b    []byte
		want string
	}{
		"truncated tag":          {[]byte{0x80}, "field tag"},
		"truncated length":       {fStr(respNonce, "abc")[:3], "field 5"},
		"type_url as varint":     {fUint(respTypeURL, 1), "field 4: wire type 0"},
		"nonce not UTF-8":        {fStr(respNonce, "\xff"), "field 5: invalid UTF-8"},
		"removed not UTF-8":      {fStr(respRemoved, "a\xc0"), "field 6: invalid UTF-8"},
		"resource as varint":     {fUint(respResources, 7), "field 2: wire type 0"},
		"resource truncated":     {fBytes(respResources, []byte{0x1a, 0x05, 'w'}), "field 3"},
		"resource name as fixed": {fMsg(respResources, []byte{0x1d, 1, 2, 3, 4}), `resource "": field 3: wire type 5`},
		"any type not UTF-8": {fMsg(respResources, fStr(resName, "w1"), fMsg(resResource, fStr(anyTypeURL, "\xfe"))),
			`resource "w1": field 1: invalid UTF-8`},
		"any value as varint": {fMsg(respResources, fMsg(resResource, fUint(anyValue, 1))), "field 2: wire type 0"},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := decodeDeltaResponse(tc.b)
			if err == nil {
				t.Fatalf("decoded %+v", r)
			}
			if !strings.HasPrefix(err.Error(), "DeltaDiscoveryResponse: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestRawCodec(t *testing.T) {
	b := []byte{1, 2, 3}
	out, err := rawCodec{}.Marshal(&b)
	if err != nil || string(out.Materialize()) != string(b) {
		t.Fatalf("Marshal: %x, %v", out.Materialize(), err)
	}
	var got []byte
	if err := (rawCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got); err != nil || string(got) != string(b) {
		t.Fatalf("Unmarshal: %x, %v", got, err)
	}
	if _, err := (rawCodec{}).Marshal(&discoveryv3.DeltaDiscoveryRequest{}); err == nil {
		t.Fatal("Marshal of a generated message: no error")
	}
	if err := (rawCodec{}).Unmarshal(nil, &discoveryv3.DeltaDiscoveryResponse{}); err == nil {
		t.Fatal("Unmarshal into a generated message: no error")
	}
}
