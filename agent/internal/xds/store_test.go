package xds

import (
	"strings"
	"testing"
	"unicode/utf8"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// TestRejectionDetailIsBounded: a hostile istiod that sends resources with names of megabytes must get a
// NACK of a few KiB, not one larger than it accepts; short names and reasons are quoted unchanged.
func TestRejectionDetailIsBounded(t *testing.T) {
	huge := strings.Repeat("é", 1<<20) // 2 MiB of 2-byte characters: a cut at 256 bytes would split one at 255
	var rs []rejection
	for range 12 {
		rs = append(rs, rejection{name: "x" + huge, reason: "bad field \xff " + huge})
	}
	detail := rejectionDetail(rs)
	if len(detail) > 4096 {
		t.Errorf("error_detail is %d bytes, want at most 4 KiB", len(detail))
	}
	if !utf8.ValidString(detail) {
		t.Errorf("error_detail is not valid UTF-8")
	}
	if !strings.HasPrefix(detail, "x"+strings.Repeat("é", 127)+"...(cut, 2097153 bytes): bad field \uFFFD é") {
		t.Errorf("error_detail does not start with the cut name and reason: %.600q", detail)
	}
	if !strings.HasSuffix(detail, " more") {
		t.Errorf("error_detail does not say how many more were rejected: %q", detail[max(0, len(detail)-100):])
	}
	req := deltaRequest{typeURL: AddressType, errorDetail: &rpcStatus{code: 3, message: detail}}
	if n := len(req.marshal()); n > 4096+512 {
		t.Errorf("the NACK is %d bytes", n)
	}

	short := []rejection{{name: "w1", reason: "workload without a uid"}, {name: "w2", reason: "no payload"}}
	if got, want := rejectionDetail(short), "w1: workload without a uid; w2: no payload"; got != want {
		t.Errorf("rejectionDetail = %q, want %q", got, want)
	}
}

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 3, "abc"},
		{"abcd", 3, "abc...(cut, 4 bytes)"},
		{"aé", 2, "a...(cut, 3 bytes)"}, // not half of é
		{"a\xffb", 8, "a\uFFFDb"},
		{"\xff\xff\xff", 2, "...(cut, 3 bytes)"}, // the replacement character alone is 3 bytes
	} {
		if got := clip(tc.in, tc.n); got != tc.want {
			t.Errorf("clip(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// The policy generation moves with the policies only: the agent compiles them and judges live connections
// again when it moves.
func TestPolicyGeneration(t *testing.T) {
	s := newStore()
	apply := func(r *discoveryv3.DeltaDiscoveryResponse) {
		t.Helper()
		if _, rejected := s.apply(wire(t, r)); len(rejected) > 0 {
			t.Fatal(rejected)
		}
	}
	apply(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: AuthorizationType, Resources: []*discoveryv3.Resource{
		authzRes("ns/allow", "1", allowFrom("ns", "allow", "cluster.local/ns/ns/sa/b"))}})
	if g := build(s, "").PolicyGeneration; g != 1 {
		t.Fatalf("generation %d after the first policy, want 1", g)
	}
	apply(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Resources: []*discoveryv3.Resource{
		addrRes("w1", "1", basicWorkload("w1", "ns", "a", "10.0.0.1"))}})
	apply(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: AuthorizationType, RemovedResources: []string{"ns/unknown"}})
	if g := build(s, "").PolicyGeneration; g != 1 {
		t.Errorf("generation %d after an address and the removal of a policy never held, want 1", g)
	}
	apply(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: AuthorizationType, RemovedResources: []string{"ns/allow"}})
	if u := build(s, ""); u.PolicyGeneration != 2 || len(u.Policies) != 0 {
		t.Errorf("generation %d and %d policies after the removal, want 2 and none", u.PolicyGeneration, len(u.Policies))
	}
}
