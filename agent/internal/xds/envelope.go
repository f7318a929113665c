package xds

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ambient-agent/ambient-agent/agent/internal/pbwire"
)

// The ADS envelope (envoy.service.discovery.v3 DeltaDiscoveryRequest and DeltaDiscoveryResponse) is written and
// read here by hand, like the resources, rather than with go-control-plane's generated types: registering their
// descriptors costs the binary 4 MB and every process, even `ambient-agent version`, 2.5 MB of memory. Field
// numbers are those of envoy/service/discovery/v3/discovery.proto, envoy/config/core/v3/base.proto (Node),
// google/protobuf/struct.proto, any.proto and google/rpc/status.proto. The tests check both directions against
// the generated types and go-control-plane's gRPC server.
const (
	// DeltaDiscoveryRequest. 8, 9 resource_locators_(un)subscribe: not sent.
	reqNode, reqTypeURL, reqSubscribe, reqUnsubscribe = 1, 2, 3, 4
	reqInitialVersions, reqResponseNonce, reqError    = 5, 6, 7

	// config.core.v3.Node. 2 cluster, 4 locality, 7/8 user_agent_version(_type), 9-12: not sent.
	nodeID, nodeMetadata, nodeUserAgentName = 1, 3, 6

	// google.protobuf.Struct: map<string, Value> fields = 1; Value: oneof kind { ... string string_value = 3; }.
	structFields, valueString, valueStruct = 1, 3, 5
	// google.rpc.Status: int32 code = 1, string message = 2 (3 details: not sent).
	statusCode, statusMessage = 1, 2
	// google.protobuf.Any
	anyTypeURL, anyValue = 1, 2
	// Every map<K, V> field is a repeated entry message with key = 1 and value = 2.
	entryKey, entryValue = 1, 2

	// DeltaDiscoveryResponse. 7 control_plane, 8 removed_resource_names, 9 resource_errors: not used, skipped.
	respSystemVersion, respResources, respTypeURL, respNonce, respRemoved = 1, 2, 4, 5, 6

	// Resource. 4 aliases, 6 ttl, 7 cache_control, 8 resource_name, 9 metadata: not used (istiod names
	// resources with name), skipped.
	resVersion, resResource, resName = 1, 2, 3
)

// node is the xDS node the client presents.
type node struct {
	id, userAgentName string
	metadata          map[string]string // string values: all istiod reads from a ztunnel
	labels            map[string]string // LABELS, a struct of strings (a registration's)
}

// deltaRequest is a DeltaDiscoveryRequest: a subscription (with the node, first on a stream) or the ACK/NACK
// of a response.
type deltaRequest struct {
	node            *node
	typeURL         string
	subscribe       []string
	initialVersions map[string]string
	responseNonce   string
	errorDetail     *rpcStatus // a NACK
}

// rpcStatus is a google.rpc.Status.
type rpcStatus struct {
	code    int32
	message string
}

// marshal encodes the request. Map entries are written in key order, so the bytes are deterministic.
func (r *deltaRequest) marshal() []byte {
	var b []byte
	if r.node != nil {
		b = pbwire.AppendMessage(b, reqNode, r.node.marshal())
	}
	b = pbwire.AppendNonEmpty(b, reqTypeURL, r.typeURL)
	for _, name := range r.subscribe {
		b = pbwire.AppendString(b, reqSubscribe, name)
	}
	b = appendStringMap(b, reqInitialVersions, r.initialVersions, func(b []byte, v string) []byte {
		return pbwire.AppendString(b, entryValue, v)
	})
	b = pbwire.AppendNonEmpty(b, reqResponseNonce, r.responseNonce)
	if r.errorDetail != nil {
		var s []byte
		// int32: negative values are sign-extended to 10 bytes
		s = pbwire.AppendNonZero(s, statusCode, uint64(int64(r.errorDetail.code)))
		// The detail quotes what istiod sent; protobuf strings must be UTF-8.
		s = pbwire.AppendNonEmpty(s, statusMessage, strings.ToValidUTF8(r.errorDetail.message, "\uFFFD"))
		b = pbwire.AppendMessage(b, reqError, s)
	}
	return b
}

func (n *node) marshal() []byte {
	b := pbwire.AppendNonEmpty(nil, nodeID, n.id)
	if n.metadata != nil {
		stringValue := func(b []byte, v string) []byte {
			return pbwire.AppendMessage(b, entryValue, pbwire.AppendString(nil, valueString, v))
		}
		md := appendStringMap(nil, structFields, n.metadata, stringValue)
		if n.labels != nil {
			labels := appendStringMap(nil, structFields, n.labels, stringValue)
			entry := pbwire.AppendString(nil, entryKey, "LABELS")
			entry = pbwire.AppendMessage(entry, entryValue, pbwire.AppendMessage(nil, valueStruct, labels))
			md = pbwire.AppendMessage(md, structFields, entry)
		}
		b = pbwire.AppendMessage(b, nodeMetadata, md)
	}
	return pbwire.AppendNonEmpty(b, nodeUserAgentName, n.userAgentName)
}

// appendStringMap writes a map<string, V> field: one entry message per key, in key order.
func appendStringMap(b []byte, num protowire.Number, m map[string]string, value func([]byte, string) []byte) []byte {
	keys := slices.Sorted(maps.Keys(m))
	for _, k := range keys {
		b = pbwire.AppendMessage(b, num, value(pbwire.AppendString(nil, entryKey, k), m[k]))
	}
	return b
}

// deltaResponse is a DeltaDiscoveryResponse: the fields the client uses.
type deltaResponse struct {
	systemVersion string
	typeURL       string
	nonce         string
	resources     []resource
	removed       []string
}

// resource is a discovery Resource: a named, versioned google.protobuf.Any.
type resource struct {
	name, version string
	hasPayload    bool // the Any is present (perhaps empty)
	payloadType   string
	payload       []byte // aliases the response's bytes
}

// decodeDeltaResponse reads a response. Unknown fields are skipped; a known field of the wrong wire type,
// invalid UTF-8 or truncated bytes is an error, which ends the stream as a malformed message would.
func decodeDeltaResponse(b []byte) (*deltaResponse, error) {
	r := &deltaResponse{}
	err := pbwire.Each(b, func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case respSystemVersion:
			r.systemVersion, err = f.Str()
		case respTypeURL:
			r.typeURL, err = f.Str()
		case respNonce:
			r.nonce, err = f.Str()
		case respRemoved:
			var name string
			name, err = f.Str()
			r.removed = append(r.removed, name)
		case respResources:
			var m []byte
			if m, err = f.Bytes(); err == nil {
				var res resource
				err = res.decode(m)
				r.resources = append(r.resources, res)
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("DeltaDiscoveryResponse: %w", err)
	}
	return r, nil
}

func (r *resource) decode(b []byte) error {
	err := pbwire.Each(b, func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case resName:
			r.name, err = f.Str()
		case resVersion:
			r.version, err = f.Str()
		case resResource:
			var m []byte
			if m, err = f.Bytes(); err == nil {
				r.hasPayload = true // a repeated message field merges into one, as protobuf does
				err = r.decodeAny(m)
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("resource %q: %w", r.name, err)
	}
	return nil
}

func (r *resource) decodeAny(b []byte) error {
	return pbwire.Each(b, func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case anyTypeURL:
			r.payloadType, err = f.Str()
		case anyValue:
			r.payload, err = f.Bytes()
		}
		return err
	})
}

// rawCodec hands gRPC the bytes of messages encoded here (a *[]byte each way), instead of the registered
// proto codec that needs generated types. It is named "proto" as that codec is: the content-type stays
// application/grpc+proto, which every gRPC server reads as protobuf.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("xds: raw codec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("xds: raw codec: cannot unmarshal into %T", v)
	}
	*b = data.Materialize() // a copy: gRPC reuses its buffers
	return nil
}
