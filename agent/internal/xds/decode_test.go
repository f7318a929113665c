package xds

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ambient-agent/ambient-agent/agent/internal/pbwire"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

func TestDecodeWorkloadEveryField(t *testing.T) {
	b := workloadAddr(
		fStr(wlUID, "Kubernetes/networking.istio.io/WorkloadEntry/ns1/vm-1"),
		fStr(wlName, "vm-1"),
		fStr(wlNamespace, "ns1"),
		fIP(wlAddresses, "10.0.0.5"),
		fIP(wlAddresses, "fd00::5"),
		fStr(wlHostname, "vm-1.example"),
		fStr(wlNetwork, "net1"),
		fUint(wlTunnelProtocol, tunnelHBONE),
		fStr(wlTrustDomain, "example.org"),
		fStr(wlServiceAccount, "sa1"),
		gatewayHostname(wlWaypoint, "ns1", "waypoint.ns1.svc.cluster.local"),
		gatewayIP(wlNetworkGateway, "net1", "10.9.9.9"),
		fStr(wlNode, "node-a"),
		fStr(wlCanonicalName, "reviews"),
		fStr(wlCanonicalRevision, "v2"),
		fUint(wlWorkloadType, 2),
		fStr(wlWorkloadN, "reviews-v2"),
		fUint(wlNativeTunnel, 1),
		servicesEntry("ns1/reviews.ns1.svc.cluster.local", portMsg(portListPorts, 80, 8080, 1)),
		fStr(wlAuthorizationPolicies, "ns1/allow-a"),
		fStr(wlAuthorizationPolicies, "istio-system/global"),
		fUint(wlStatus, statusUnhealthy),
		fStr(wlClusterID, "c1"),
		fMsg(wlCapacity, fUint(wrapperValue, 7)),
		fMsg(wlLocality, fStr(locRegion, "eu"), fStr(locZone, "eu-1"), fStr(locSubzone, "rack-3")),
		fUint(99, 1), // a field from the future: skipped
	)
	a, err := decodeAddress(b)
	if err != nil {
		t.Fatal(err)
	}
	want := &workload{
		UID: "Kubernetes/networking.istio.io/WorkloadEntry/ns1/vm-1", Name: "vm-1", Namespace: "ns1",
		Hostname:  "vm-1.example",
		Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")},
		Network:   "net1", TrustDomain: "example.org", ServiceAccount: "sa1", Node: "node-a",
		Tunnel: tunnelHBONE, NativeTunnel: true,
		Waypoint: &gatewayAddress{Namespace: "ns1", Hostname: "waypoint.ns1.svc.cluster.local", HBONEPort: 15008},
		NetworkGateway: &gatewayAddress{Address: networkAddress{Network: "net1", Addr: netip.MustParseAddr("10.9.9.9")},
			HBONEPort: 15008},
		CanonicalName: "reviews", CanonicalRevision: "v2", WorkloadName: "reviews-v2", WorkloadType: 2,
		Services:              map[string][]port{"ns1/reviews.ns1.svc.cluster.local": {{80, 8080, 1}}},
		AuthorizationPolicies: []string{"ns1/allow-a", "istio-system/global"},
		Status:                statusUnhealthy, ClusterID: "c1", Capacity: 7,
		Locality: state.Locality{Region: "eu", Zone: "eu-1", Subzone: "rack-3"},
	}
	if a.Service != nil || !reflect.DeepEqual(a.Workload, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", a.Workload, want)
	}
}

func TestDecodeWorkloadDefaults(t *testing.T) {
	a, err := decodeAddress(workloadAddr(fStr(wlUID, "u"), fStr(wlName, "n"), fStr(wlNamespace, "ns")))
	if err != nil {
		t.Fatal(err)
	}
	if w := a.Workload; w.Capacity != 1 || w.Status != statusHealthy || w.Tunnel != tunnelNone {
		t.Fatalf("defaults: %+v", w)
	}
}

// A newer istiod may send app protocols and workload types this agent does not
// know: the resource is kept, with the value read as the enum's default, as
// ztunnel does (an error would drop the workload or service).
func TestDecodeToleratesNewEnumValues(t *testing.T) {
	a, err := decodeAddress(workloadAddr(fStr(wlUID, "u"), fStr(wlName, "n"), fStr(wlNamespace, "ns"), fUint(wlWorkloadType, 9)))
	if err != nil || a.Workload.WorkloadType != 0 {
		t.Fatalf("workload type 9: %v, %+v; want kept, as 0", err, a)
	}
	a, err = decodeAddress(serviceAddr(fStr(svcNamespace, "ns"), fStr(svcHostname, "h"), portMsg(svcPorts, 80, 80, 9)))
	if err != nil || len(a.Service.Ports) != 1 || a.Service.Ports[0].AppProtocol != 0 {
		t.Fatalf("app protocol 9: %v, %+v; want kept, as UNKNOWN", err, a)
	}
	if _, err := decodeAddress(serviceAddr(fStr(svcNamespace, "ns"), fStr(svcHostname, "h"), fMsg(svcPorts, fStr(portAppProtocol, "x")))); err == nil {
		t.Fatal("an app protocol of the wrong wire type was accepted")
	}
}

func TestDecodeServiceEveryField(t *testing.T) {
	b := serviceAddr(
		fStr(svcName, "reviews"),
		fStr(svcNamespace, "ns1"),
		fStr(svcHostname, "reviews.ns1.svc.cluster.local"),
		networkAddr(svcAddresses, "net1", "10.96.0.10"),
		networkAddr(svcAddresses, "", "fd00:96::10"),
		fMsg(svcAddresses, fStr(naNetwork, "net1"), fIP(naAddress, "10.97.0.0"), fUint(naLength, 16)), // a CIDR VIP
		portMsg(svcPorts, 80, 8080, 1),
		portMsg(svcPorts, 9090, 0, 3),
		fStr(svcSubjectAltNames, "spiffe://cluster.local/ns/ns1/sa/reviews"),
		gatewayIP(svcWaypoint, "net1", "10.96.0.99"),
		fMsg(svcLoadBalancing, fUint(lbRoutingPreference, 6), fUint(lbRoutingPreference, 2), fUint(lbRoutingPreference, 77),
			fUint(lbMode, 2), fUint(lbHealthPolicy, healthAllowAll)),
		fMsg(svcWeightedWaypoints, gatewayHostname(wwDestination, "ns1", "wp-canary.ns1.svc.cluster.local"), fUint(wwWeight, 10)),
		fUint(svcVisibility, visibilityNamespace),
		fUint(9, 1), // ip_families: skipped
	)
	a, err := decodeAddress(b)
	if err != nil {
		t.Fatal(err)
	}
	want := &service{
		Name: "reviews", Namespace: "ns1", Hostname: "reviews.ns1.svc.cluster.local",
		Addresses: []networkAddress{{"net1", netip.MustParseAddr("10.96.0.10"), 0}, {"", netip.MustParseAddr("fd00:96::10"), 0},
			{"net1", netip.MustParseAddr("10.97.0.0"), 16}},
		Ports:           []port{{80, 8080, 1}, {9090, 0, 3}},
		SubjectAltNames: []string{"spiffe://cluster.local/ns/ns1/sa/reviews"},
		Waypoint:        &gatewayAddress{Address: networkAddress{"net1", netip.MustParseAddr("10.96.0.99"), 0}, HBONEPort: 15008},
		// An unknown scope (77, a newer istiod's) is skipped.
		LoadBalancing: &state.LoadBalancing{Mode: state.LBFailover, Preference: []state.Scope{state.ScopeNetwork, state.ScopeZone}, AllowAll: true},
		Weighted: []weightedWaypoint{{Destination: &gatewayAddress{Namespace: "ns1", Hostname: "wp-canary.ns1.svc.cluster.local", HBONEPort: 15008},
			Weight: 10}},
		NamespaceOnly: true,
	}
	if a.Workload != nil || !reflect.DeepEqual(a.Service, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", a.Service, want)
	}
}

func TestDecodeAuthorizationEveryField(t *testing.T) {
	match := fMsg(rulesMatches,
		strMatch(mNamespaces, smExact, "ns-a"),
		strMatch(mNotNamespaces, smPrefix, "kube-"),
		strMatch(mPrincipals, smSuffix, "/sa/client"),
		strMatch(mNotPrincipals, smPresence, ""),
		fMsg(mServiceAccounts, fStr(saNamespace, "ns-b"), fStr(saServiceAccount, "sa-b")),
		fMsg(mNotServiceAccounts, fStr(saNamespace, "ns-c"), fStr(saServiceAccount, "sa-c")),
		cidr(mSourceIPs, "10.0.0.0", 8),
		cidr(mNotSourceIPs, "10.1.2.3", 32),
		cidr(mDestinationIPs, "fd00::", 64),
		cidr(mNotDestinationIPs, "192.168.0.1", 33),                                             // too long: left for CompileXDS to drop
		fBytes(mDestinationPorts, protowire.AppendVarint(protowire.AppendVarint(nil, 80), 443)), // packed
		fUint(mNotDestinationPorts, 22),                                                         // unpacked
		fMsg(mNamespaces),                                                                       // no match type
	)
	b := cat(
		fStr(authzName, "allow-a"), fStr(authzNamespace, "ns1"), fUint(authzScope, 1), fUint(authzAction, 1),
		fUint(authzDryRun, 1),
		fMsg(authzGroups, fMsg(groupRules, match), fMsg(groupRules)),
		fMsg(authzGroups),
		fMsg(7, fStr(1, "ext")), // extensions: skipped
	)
	got, err := decodeAuthorization(b)
	if err != nil {
		t.Fatal(err)
	}
	want := &policy.XDSAuthorization{
		Name: "allow-a", Namespace: "ns1", Scope: policy.XDSScopeNamespace, Action: policy.XDSActionDeny, DryRun: true,
		Groups: []policy.XDSGroup{
			{Rules: []policy.XDSRules{{Matches: []policy.XDSMatch{{
				Namespaces:          []policy.XDSStringMatch{{Exact: "ns-a"}, {}},
				NotNamespaces:       []policy.XDSStringMatch{{Prefix: "kube-"}},
				Principals:          []policy.XDSStringMatch{{Suffix: "/sa/client"}},
				NotPrincipals:       []policy.XDSStringMatch{{Presence: true}},
				ServiceAccounts:     []policy.XDSServiceAccountMatch{{Namespace: "ns-b", ServiceAccount: "sa-b"}},
				NotServiceAccounts:  []policy.XDSServiceAccountMatch{{Namespace: "ns-c", ServiceAccount: "sa-c"}},
				SourceIPs:           []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
				NotSourceIPs:        []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32")},
				DestinationIPs:      []netip.Prefix{netip.MustParsePrefix("fd00::/64")},
				NotDestinationIPs:   []netip.Prefix{{}},
				DestinationPorts:    []uint16{80, 443},
				NotDestinationPorts: []uint16{22},
			}}}, {}}},
			{},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, want)
	}
	compiled, warnings := policy.CompileXDS([]policy.XDSAuthorization{*got})
	if len(compiled) != 1 || len(warnings) != 2 {
		t.Fatalf("CompileXDS: %d policies, warnings %v (want the empty string match and the bad prefix)", len(compiled), warnings)
	}
}

func TestDecodeRejects(t *testing.T) {
	ok := []byte(nil)
	ok = append(ok, fStr(wlUID, "u")...)
	ok = append(ok, fStr(wlName, "n")...)
	ok = append(ok, fStr(wlNamespace, "ns")...)
	for _, tc := range []struct {
		name, want string
		b          []byte
	}{
		{"empty", "neither a workload nor a service", nil},
		{"truncated", "field 1", workloadAddr(ok)[:5]},
		{"bad tag", "field tag", []byte{0x80}},
		{"wrong wire type", "wire type", fUint(addrWorkload, 1)},
		{"string as varint", "wire type", workloadAddr(ok, fUint(wlName, 3))},
		{"address of 5 bytes", "5 bytes", workloadAddr(ok, fBytes(wlAddresses, []byte{1, 2, 3, 4, 5}))},
		{"unknown tunnel", "unknown tunnel protocol 3", workloadAddr(ok, fUint(wlTunnelProtocol, 3))},
		{"unknown status", "unknown workload status 2", workloadAddr(ok, fUint(wlStatus, 2))},
		{"invalid utf-8", "invalid UTF-8", workloadAddr(ok, fBytes(wlNode, []byte{0xff, 0xfe}))},
		{"no uid", "no uid", workloadAddr(fStr(wlName, "n"), fStr(wlNamespace, "ns"))},
		{"service key", "not namespace/hostname", workloadAddr(ok, servicesEntry("no-slash"))},
		{"port out of range", "out of range", workloadAddr(ok, servicesEntry("ns/h", portMsg(portListPorts, 70000, 1, 0)))},
		{"capacity out of range", "out of range", workloadAddr(ok, fMsg(wlCapacity, fUint(wrapperValue, 1<<32)))},
		{"empty gateway", "neither a hostname nor an address", workloadAddr(ok, fMsg(wlWaypoint))},
		{"service without hostname", "no namespace or hostname", serviceAddr(fStr(svcName, "s"), fStr(svcNamespace, "ns"))},
		{"vip without address", "no address", serviceAddr(fStr(svcNamespace, "ns"), fStr(svcHostname, "h"), fMsg(svcAddresses, fStr(naNetwork, "n")))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeAddress(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name, want string
		b          []byte
	}{
		{"no name", "no name or namespace", fStr(authzNamespace, "ns")},
		{"unknown action", "unknown action 2", cat(fStr(authzName, "a"), fStr(authzNamespace, "ns"), fUint(authzAction, 2))},
		{"unknown scope", "unknown scope 7", cat(fStr(authzName, "a"), fStr(authzNamespace, "ns"), fUint(authzScope, 7))},
		{"negative enum", "unknown action -1", cat(fStr(authzName, "a"), fStr(authzNamespace, "ns"), fUint(authzAction, 1<<64-1))},
		{"bad match", "wire type", cat(fStr(authzName, "a"), fStr(authzNamespace, "ns"),
			fMsg(authzGroups, fMsg(groupRules, fMsg(rulesMatches, fUint(mPrincipals, 1)))))},
		{"bad packed ports", "field 9", cat(fStr(authzName, "a"), fStr(authzNamespace, "ns"),
			fMsg(authzGroups, fMsg(groupRules, fMsg(rulesMatches, fBytes(mDestinationPorts, []byte{0x80})))))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeAuthorization(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// A oneof keeps the last value on the wire, as protobuf decoders do.
func TestDecodeOneofLastWins(t *testing.T) {
	a, err := decodeAddress(cat(serviceAddr(fStr(svcNamespace, "ns"), fStr(svcHostname, "h")),
		workloadAddr(fStr(wlUID, "u"), fStr(wlName, "n"), fStr(wlNamespace, "ns"))))
	if err != nil || a.Service != nil || a.Workload == nil {
		t.Fatalf("got %+v, %v", a, err)
	}
	g, err := decodeGatewayAddress(pbwire.Field{Num: wlWaypoint, Typ: protowire.BytesType,
		B: cat(fMsg(gwHostname, fStr(nhNamespace, "ns"), fStr(nhHostname, "h")), fMsg(gwAddress, fIP(naAddress, "10.0.0.1")))})
	if err != nil || g.Hostname != "" || g.Address.Addr != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("got %+v, %v", g, err)
	}
}
