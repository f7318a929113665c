package discovery

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// fullRecord uses every field of the format.
func fullRecord() *Record {
	return &Record{
		Node:         "vm-1",
		Version:      1_700_000_000_000_000_001,
		AgentVersion: "1.2.3",
		Address:      netip.MustParseAddrPort("192.168.1.10:7946"),
		Workloads: []*state.Workload{{
			Name: "web", Namespace: "shop", ServiceAccount: "web-sa", TrustDomain: "example.org",
			Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
			Network:   "net-1", Tunnel: state.TunnelHBONE, Healthy: true, Capacity: 3, UseWaypoint: "shop/wp", Ports: []uint16{80, 8080},
			Labels:    map[string]string{"app": "web", "version": "v1", "service.istio.io/canonical-name": "web"},
			ClusterID: "Kubernetes", Locality: state.Locality{Region: "eu", Zone: "eu-1", Subzone: "rack-2"},
		}, {
			Name: "db", Namespace: "shop", ServiceAccount: "db", TrustDomain: "example.org",
			Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.2")}, Tunnel: state.TunnelNone, Healthy: false,
		}},
		Services: []Service{{
			Name: "web", Namespace: "shop", Hostname: "web.shop.svc.cluster.local",
			Addresses: []netip.Addr{netip.MustParseAddr("240.240.0.1")},
			Ports:     []ServicePort{{Port: 80, TargetPort: 8080, AppProtocol: "http"}, {Port: 443}},
			Workloads: []string{"shop/web"}, UseWaypoint: "none",
		}},
		Waypoint: &Waypoint{
			Name:      "wp",
			Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.9")}, Namespace: "shop",
			ServiceAccount: "waypoint", TrustDomain: "example.org", ForServiceAccount: "web-sa",
		},
		Gateway: &Gateway{
			Network: "net-1", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.10")}, Namespace: "istio-system",
			ServiceAccount: "istio-eastwestgateway", TrustDomain: "example.org",
		},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	want := fullRecord()
	raw := encodeRecord(want)
	got, err := decodeRecord(raw)
	if err == nil && got.signedLen != len(raw) {
		t.Errorf("a record without proofs signs %d bytes of %d", got.signedLen, len(raw))
	}
	if got != nil {
		got.signedLen = 0
	}
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	if !bytes.Equal(encodeRecord(got), raw) {
		t.Error("re-encoding a decoded record changes its bytes")
	}
	ws := remoteWorkloads(got, proven{signed: true})
	if ws[0].UID != "vm-1/shop/web" || ws[0].Node != "vm-1" || ws[1].Capacity != 1 || ws[1].Healthy {
		t.Errorf("derived workloads: %+v %+v", ws[0], ws[1])
	}
	svcs := remoteServices(got, proven{signed: true})
	if len(svcs) != 1 || svcs[0].Workloads[0] != "vm-1/shop/web" || svcs[0].Ports[1].TargetPort != 443 || svcs[0].UseWaypoint != "none" {
		t.Errorf("derived services: %+v", svcs)
	}
	if wp := remoteWaypoint(got, proven{signed: true}); wp == nil || wp.Key() != "shop/wp" || wp.Node != "vm-1" || wp.ForServiceAccount != "web-sa" {
		t.Errorf("derived waypoint: %+v", wp)
	}
	g := remoteGateway(got, proven{signed: true}, DefaultGatewayIdentities)
	if g == nil || g.Network != "net-1" || g.Node != "vm-1" || g.Identity != "spiffe://example.org/ns/istio-system/sa/istio-eastwestgateway" {
		t.Errorf("derived gateway: %+v", g)
	}
	// Only a signed record's, and only of an identity allowed to be a gateway.
	if g := remoteGateway(got, proven{}, DefaultGatewayIdentities); g != nil {
		t.Errorf("an unsigned record's gateway was used: %+v", g)
	}
	if g := remoteGateway(got, proven{signed: true}, []string{"shop/gw"}); g != nil {
		t.Errorf("a gateway of an identity not allowed to be one was used: %+v", g)
	}
}

// A newer compatible format adds fields: this version skips them and still checks the rest.
func TestUnknownFieldsAreSkipped(t *testing.T) {
	raw := encodeRecord(fullRecord())
	raw = protowire.AppendTag(raw, 99, protowire.BytesType)
	raw = protowire.AppendBytes(raw, []byte("from the future"))
	raw = protowire.AppendTag(raw, 100, protowire.Fixed64Type)
	raw = protowire.AppendFixed64(raw, 7)
	if _, err := decodeRecord(raw); err != nil {
		t.Fatalf("unknown fields: %v", err)
	}
}

func TestBadRecordsAreDropped(t *testing.T) {
	good := encodeRecord(fullRecord())
	withField := func(num protowire.Number, typ protowire.Type, v []byte) []byte {
		b := bytes.Clone(good)
		b = protowire.AppendTag(b, num, typ)
		if typ == protowire.BytesType {
			return protowire.AppendBytes(b, v)
		}
		return protowire.AppendVarint(b, 5)
	}
	many := func(n int) []byte {
		r := &Record{Node: "vm-1"}
		for i := range n {
			r.Workloads = append(r.Workloads, testWorkload(1, i%200))
		}
		return encodeRecord(r)
	}
	mutate := func(f func(*Record)) []byte {
		r := fullRecord()
		f(r)
		return encodeRecord(r)
	}
	for _, c := range []struct {
		name   string
		raw    []byte
		reason string
	}{
		{"empty", nil, reasonMalformed},
		{"not ours", []byte("GET / HTTP/1.1\r\n\r\n"), reasonMalformed},
		{"newer format", append([]byte{formatMagic, formatVersion + 1}, good[2:]...), reasonIncompatible},
		{"format zero", append([]byte{formatMagic, 0}, good[2:]...), reasonMalformed},
		{"truncated", good[:len(good)-3], reasonMalformed},
		{"oversized", append(bytes.Clone(good), make([]byte, MaxRecordBytes)...), reasonTooLarge},
		{"too many workloads", many(MaxWorkloads + 1), reasonTooLarge},
		{"node as varint", withField(recNode, protowire.VarintType, nil), reasonMalformed},
		{"workload garbage", withField(recWorkload, protowire.BytesType, []byte{0xff, 0xff}), reasonMalformed},
		{"not UTF-8", withField(recAgentVersion, protowire.BytesType, []byte{0xff}), reasonMalformed},
		{"loopback address", mutate(func(r *Record) {
			r.Workloads[1].Addresses = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
		}), reasonInvalid},
		{"bad cluster", mutate(func(r *Record) { r.Workloads[0].ClusterID = "-no" }), reasonInvalid},
		{"bad locality", mutate(func(r *Record) { r.Workloads[0].Locality.Zone = "a zone" }), reasonInvalid},
		{"address of 5 bytes", withField(recWaypoint, protowire.BytesType,
			protowire.AppendBytes(protowire.AppendTag(nil, wpAddress, protowire.BytesType), []byte{1, 2, 3, 4, 5})), reasonInvalid},
		{"unknown tunnel", withField(recWorkload, protowire.BytesType,
			protowire.AppendVarint(protowire.AppendTag(nil, wlTunnel, protowire.VarintType), 7)), reasonInvalid},
		{"bad name", mutate(func(r *Record) { r.Workloads[0].Name = "Web_1" }), reasonInvalid},
		{"one bad of many", mutate(func(r *Record) { r.Workloads[1].TrustDomain = "" }), reasonInvalid},
		{"duplicate address", mutate(func(r *Record) { r.Workloads[1].Addresses = r.Workloads[0].Addresses[:1] }), reasonInvalid},
		{"service of another node's workload", mutate(func(r *Record) { r.Services[0].Workloads = []string{"shop/nope"} }), reasonInvalid},
		{"port zero", mutate(func(r *Record) { r.Services[0].Ports[0].Port = 0 }), reasonInvalid},
		{"node address without port", mutate(func(r *Record) { r.Address = netip.MustParseAddrPort("10.0.0.1:0") }), reasonInvalid},
		{"node address of 3 bytes", withField(recAddress, protowire.BytesType, []byte{1, 2, 3}), reasonInvalid},
	} {
		rec, err := decodeRecord(c.raw)
		var d *dropError
		if rec != nil || !errors.As(err, &d) || d.reason != c.reason {
			t.Errorf("%s: got %v, %v; want a %s drop", c.name, rec, err, c.reason)
		}
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	a := advertOf([]byte("record"), 42)
	got, ok, err := decodeMeta(encodeMeta(a))
	if err != nil || !ok || got != a {
		t.Errorf("meta: %v %v %v", got, ok, err)
	}
	if _, ok, err := decodeMeta(nil); ok || err != nil {
		t.Errorf("empty meta: %v %v", ok, err)
	}
	if _, _, err := decodeMeta([]byte{formatMagic, formatVersion + 1}); reasonOf(err) != reasonIncompatible {
		t.Errorf("newer meta: %v", err)
	}
	if len(encodeMeta(a)) > 64 {
		t.Errorf("meta is %d bytes; memberlist allows 512, keep it small", len(encodeMeta(a)))
	}

	req := request{from: "vm-2", addr: netip.MustParseAddrPort("[fd00::2]:7946"), want: []string{"vm-3", "vm-4"}}
	kind, body, err := decodeMessage(encodeRequest(req))
	if err != nil || kind != kindRequest {
		t.Fatalf("request: %v %v", kind, err)
	}
	if got, err := decodeRequest(body); err != nil || !reflect.DeepEqual(got, req) {
		t.Errorf("request: %+v %v", got, err)
	}

	records := [][]byte{encodeRecord(fullRecord()), []byte("anything")}
	kind, body, err = decodeMessage(encodeState(records))
	if err != nil || kind != kindState {
		t.Fatalf("state: %v %v", kind, err)
	}
	if got, err := decodeState(body); err != nil || !reflect.DeepEqual(got, records) {
		t.Errorf("state: %q %v", got, err)
	}
	if _, _, err := decodeMessage([]byte{formatMagic, formatVersion}); err == nil || !strings.Contains(err.Error(), "kind") {
		t.Errorf("message without kind: %v", err)
	}
}

// Names and addresses a peer may not use: the reserved node names, and
// workload or waypoint addresses no host has (link-local, the metadata
// service, the VIP allocation ranges).
func TestRecordRefusesReservedNamesAndNonHostAddresses(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*Record)
	}{
		{"node istiod", func(r *Record) { r.Node = "istiod" }},
		{"node static", func(r *Record) { r.Node = "static" }},
		{"metadata workload", func(r *Record) { r.Workloads[0].Addresses = []netip.Addr{netip.MustParseAddr("169.254.169.254")} }},
		{"link-local v6 workload", func(r *Record) { r.Workloads[0].Addresses = []netip.Addr{netip.MustParseAddr("fe80::1")} }},
		{"allocated-range workload", func(r *Record) { r.Workloads[0].Addresses = []netip.Addr{netip.MustParseAddr("240.240.4.159")} }},
		{"metadata waypoint", func(r *Record) { r.Waypoint.Addresses = []netip.Addr{netip.MustParseAddr("169.254.169.254")} }},
		{"capacity over 1000", func(r *Record) { r.Workloads[0].Capacity = 1001 }},
	} {
		r := fullRecord()
		tc.mut(r)
		if _, err := decodeRecord(encodeRecord(r)); reasonOf(err) != reasonInvalid {
			t.Errorf("%s: %v, want invalid", tc.name, err)
		}
	}
}

// Proofs are one per claimed identity: a duplicate, or a proof of an identity
// the record claims nothing for, is refused before any signature is checked.
// A gateway is a claim like a workload: the record must carry its identity's proof.
func TestGatewayClaimNeedsItsProof(t *testing.T) {
	r := testRecord(5, 1)
	r.Node, r.Version = "vm-5", 1
	r.Gateway = &Gateway{Network: "net-b", Addresses: []netip.Addr{netip.MustParseAddr("10.0.5.99")}, Namespace: "istio-system",
		ServiceAccount: "istio-eastwestgateway", TrustDomain: "cluster.local"}
	trust := testTrust()
	good := signed(t, r)
	rec, err := decodeRecord(good)
	if err != nil {
		t.Fatal(err)
	}
	p, err := verifyProofs(rec, good[:rec.signedLen], &trust, time.Now())
	if err != nil {
		t.Fatalf("a gateway signed by its identity: %v", err)
	}
	if g := remoteGateway(rec, p, DefaultGatewayIdentities); g == nil || g.Network != "net-b" {
		t.Errorf("derived gateway: %+v", g)
	}
	// Signed by the workload's identity only: the gateway claim is unproven, the record dropped.
	wid, _ := identityOf("cluster.local", "default", "sa")
	s, _ := trust.SVID(wid)
	bad := signedBy(t, r, s)
	rec, _ = decodeRecord(bad)
	if _, err := verifyProofs(rec, bad[:rec.signedLen], &trust, time.Now()); reasonOf(err) != reasonUnproven {
		t.Errorf("a gateway its identity did not sign: %v, want %s", err, reasonUnproven)
	}
}

func TestProofsMatchClaims(t *testing.T) {
	r := testRecord(4, 1)
	r.Node, r.Version = "vm-4", 1
	good := signed(t, r)
	rec, err := decodeRecord(good)
	if err != nil {
		t.Fatal(err)
	}
	trust := testTrust()
	if _, err := verifyProofs(rec, good[:rec.signedLen], &trust, time.Now()); err != nil {
		t.Fatalf("a good record: %v", err)
	}
	rec.Proofs = append(rec.Proofs, rec.Proofs[0])
	if _, err := verifyProofs(rec, good[:rec.signedLen], &trust, time.Now()); reasonOf(err) != reasonBadProof || !strings.Contains(err.Error(), "a second proof") {
		t.Errorf("a duplicate proof: %v", err)
	}
	mesh, _ := testCAs()
	other, _ := identityOf("cluster.local", "other", "z")
	stray := signedBy(t, r, mesh.issue(other, time.Now().Add(time.Hour).Truncate(time.Minute)))
	rec, _ = decodeRecord(stray)
	if _, err := verifyProofs(rec, stray[:rec.signedLen], &trust, time.Now()); reasonOf(err) != reasonBadProof || !strings.Contains(err.Error(), "claims nothing for") {
		t.Errorf("a proof of an unclaimed identity: %v", err)
	}
}
