package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/xds"
	"github.com/ambient-agent/ambient-agent/nft"
)

// doctor compares what the agent installed with what the kernel holds.
func TestCheckTableReadsTheKernel(t *testing.T) {
	d := &admin.Dump{Config: &config.Config{}}
	d.Capture.Enabled, d.Capture.Table, d.Capture.Chains = true, "inet ambient_agent", []string{"guard", "inbound", "outbound"}
	if c := checkTable(d, nft.State{}); c.OK || !strings.Contains(c.Detail, "is missing") || c.Fix == "" {
		t.Errorf("table missing in the kernel: %+v", c)
	}
	if c := checkTable(d, nft.State{Present: true, Chains: []string{"inbound", "outbound"}}); c.OK || !strings.Contains(c.Detail, "lacks chains [guard]") {
		t.Errorf("a chain missing in the kernel: %+v", c)
	}
	if c := checkTable(d, nft.State{Present: true, Chains: []string{"guard", "inbound", "outbound"}}); !c.OK {
		t.Errorf("the whole table in the kernel: %+v", c)
	}
	d.Capture.Enabled = false
	if c := checkTable(d, nft.State{}); !c.OK {
		t.Errorf("nothing captured: %+v", c)
	}
}

// doctor names the listeners other hosts reach without the agent, and only those.
func TestCheckUnmeshedNamesDirectListeners(t *testing.T) {
	d := &admin.Dump{Config: &config.Config{}}
	d.Capture.Enabled = true
	d.Config.Capture.ExcludeInboundPorts = []uint16{22}
	d.Config.Capture.InboundAddresses = "all"
	d.Config.Capture.UnmeshedAddresses = []netip.Prefix{netip.MustParsePrefix("192.168.10.5/32")}
	d.Workloads = []*state.Workload{{Local: true, Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.5")}}}
	ls := []netip.AddrPort{
		netip.MustParseAddrPort("0.0.0.0:22"),        // excluded port
		netip.MustParseAddrPort("192.168.10.5:9100"), // unmeshed address
		netip.MustParseAddrPort("10.0.0.5:8080"),     // a workload's: meshed
		netip.MustParseAddrPort("127.0.0.1:5432"),    // loopback
		netip.MustParseAddrPort("[::]:15008"),        // the agent's
		netip.MustParseAddrPort("10.0.0.6:8080"),     // another address, captured ("all")
	}
	c := checkUnmeshed(d, ls)
	for _, want := range []string{"0.0.0.0:22 (port excluded)", "192.168.10.5:9100 (address unmeshed)"} {
		if !strings.Contains(c.Detail, want) {
			t.Errorf("detail lacks %q: %s", want, c.Detail)
		}
	}
	for _, not := range []string{"10.0.0.5:8080", "5432", "15008", "10.0.0.6"} {
		if strings.Contains(c.Detail, not) {
			t.Errorf("detail names %s, which is meshed or local: %s", not, c.Detail)
		}
	}
	if !c.OK || !c.Note {
		t.Errorf("a note, not a failure: %+v", c)
	}
	d.Config.Capture.InboundAddresses = "workloads"
	if c := checkUnmeshed(d, ls); !strings.Contains(c.Detail, "10.0.0.6:8080 (not a workload's address)") || strings.Contains(c.Detail, "10.0.0.5:8080") {
		t.Errorf("with inbound_addresses = workloads: %s", c.Detail)
	}
}

func TestParseProcAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000:0016":                         "0.0.0.0:22",
		"00000000000000000000000001000000:3A98": "[::1]:15000",
		"0000000000000000FFFF00000C4D0A0A:1F90": "10.10.77.12:8080",
	} {
		got, ok := parseProcAddr(in)
		if !ok || got.String() != want {
			t.Errorf("parseProcAddr(%q) = %v %v, want %s", in, got, ok, want)
		}
	}
}

// doctor says how old the cluster state is while istiod is unreachable.
func TestCheckIstiod(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	up := &xds.Status{Address: "istiod:15012", Connected: true, Since: now.Add(-time.Hour), Addresses: 3, Policies: 1}
	if c := checkIstiod(up, now); !c.OK || !strings.Contains(c.Detail, "connected to istiod:15012 for 1h0m0s; 3 addresses, 1 policies") {
		t.Errorf("connected: %+v", c)
	}
	down := &xds.Status{Address: "istiod:15012", Since: now.Add(-5 * time.Minute), LastResponse: now.Add(-6 * time.Minute),
		LastError: "connection refused", Addresses: 3, Rejected: 2}
	c := checkIstiod(down, now)
	for _, want := range []string{"not connected to istiod:15012 for 5m0s", "6m0s old", "2 resources refused", "last error: connection refused"} {
		if c.OK || !strings.Contains(c.Detail, want) {
			t.Errorf("disconnected: %+v lacks %q", c, want)
		}
	}
	if c := checkIstiod(&xds.Status{Address: "x", Since: now}, now); c.OK || !strings.Contains(c.Detail, "no cluster state received yet") {
		t.Errorf("never connected: %+v", c)
	}
}

// A captured local workload that names no waypoint while one runs in its
// namespace is noted: it relied on namespace binding, which is gone.
func TestCheckUnboundWaypoints(t *testing.T) {
	d := &admin.Dump{Config: &config.Config{}}
	if err := json.Unmarshal([]byte(`{"waypoints":[{"name":"wp","namespace":"prod"}],"workloads":[
		{"name":"api","namespace":"prod","local":true,"tunnelProtocol":"HBONE"},
		{"name":"bound","namespace":"prod","local":true,"tunnelProtocol":"HBONE","useWaypoint":"wp"},
		{"name":"optout","namespace":"prod","local":true,"tunnelProtocol":"HBONE","useWaypoint":"none"},
		{"name":"remote","namespace":"prod","local":false,"tunnelProtocol":"HBONE"},
		{"name":"other","namespace":"dev","local":true,"tunnelProtocol":"HBONE"}]}`), d); err != nil {
		t.Fatal(err)
	}
	c, ok := checkUnboundWaypoints(d)
	if !ok || !c.OK || !c.Note || c.Detail != "these workloads name no waypoint, so none is used: prod/api (waypoint prod/wp runs in its namespace)" {
		t.Fatalf("check %+v, %v", c, ok)
	}
	d.Waypoints = nil
	if _, ok := checkUnboundWaypoints(d); ok {
		t.Error("noted with no waypoint in the mesh")
	}
}

// A missing return path is a failed check with a fix; an installed one passes.
func TestCheckReturnPath(t *testing.T) {
	if c := checkReturnPath(capture.AgentReturnPath(0), true, nil, true); !c.OK || c.Fix != "" {
		t.Errorf("installed: %+v", c)
	}
	if c := checkReturnPath(capture.AgentReturnPath(0), true, nil, false); c.OK || c.Fix == "" || !strings.Contains(c.Detail, "ambient_agent_zone") {
		t.Errorf("installed without its zone table: %+v", c)
	}
	if c := checkReturnPath(capture.AgentReturnPath(0), false, nil, true); c.OK || c.Fix == "" {
		t.Errorf("missing: %+v", c)
	}
	if c := checkReturnPath(capture.AgentReturnPath(0), false, errors.New("netlink: permission denied"), true); c.OK || !strings.Contains(c.Detail, "permission denied") {
		t.Errorf("unreadable: %+v", c)
	}
}

// With istiod's certificates, doctor judges a certificate by its renewal (half its life) and each identity's
// token by what istiod would refuse; an expired token is only a note while the certificate is valid.
func TestDoctorIstioCertificatesAndTokens(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	web := "spiffe://cluster.local/ns/shop/sa/web"
	cert := func(issued time.Time) identity.CertInfo {
		return identity.CertInfo{Kind: "workload", Identity: web, NotBefore: issued.Add(-2 * time.Minute), NotAfter: issued.Add(24 * time.Hour)}
	}
	if c := checkCert(cert(now.Add(-13*time.Hour)), true, now); !c.OK {
		t.Errorf("an istiod certificate at 13 h of 24: %+v, want OK (renewal due at 12 h, retried)", c)
	}
	if c := checkCert(cert(now.Add(-19*time.Hour)), true, now); c.OK || !strings.Contains(c.Fix, "overdue") {
		t.Errorf("an istiod certificate at 19 h of 24: %+v, want an overdue renewal", c)
	}
	if c := checkCert(cert(now.Add(-13*time.Hour)), false, now); c.OK {
		t.Errorf("a file certificate with 11 h left: %+v, want a warning", c)
	}

	dir := t.TempDir()
	jwt := func(claims string) string {
		enc := base64.RawURLEncoding.EncodeToString
		return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(claims)) + ".c2ln"
	}
	write := func(content string) {
		if err := os.MkdirAll(filepath.Join(dir, "shop"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "shop", "web"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d := &admin.Dump{Config: &config.Config{}}
	d.Config.Identity.Source, d.Config.Istio.TokenDir = config.SourceIstio, dir
	valid, expired := cert(now.Add(-time.Hour)), cert(now.Add(-25*time.Hour))
	for _, tc := range []struct {
		token string
		cert  identity.CertInfo
		ok    bool
		want  string
	}{
		{jwt(fmt.Sprintf(`{"aud":["istio-ca"],"exp":%d}`, now.Add(time.Hour).Unix())), valid, true, "audience istio-ca, expires"},
		{jwt(fmt.Sprintf(`{"aud":"kubernetes","exp":%d}`, now.Add(time.Hour).Unix())), valid, false, "not istio-ca"},
		{jwt(fmt.Sprintf(`{"aud":["istio-ca"],"exp":%d}`, now.Add(-time.Hour).Unix())), valid, true, "not needed while the certificate is valid"},
		{jwt(fmt.Sprintf(`{"aud":["istio-ca"],"exp":%d}`, now.Add(-time.Hour).Unix())), expired, false, "expired"},
		{"not a jwt", expired, false, "is not a JWT"},
	} {
		write(tc.token)
		d.Certificates = []identity.CertInfo{tc.cert}
		cs := checkTokens(d, now)
		if len(cs) != 1 || cs[0].OK != tc.ok || !strings.Contains(cs[0].Detail, tc.want) {
			t.Errorf("token %q: %+v, want ok %v and %q", tc.token, cs, tc.ok, tc.want)
		}
	}
}

// doctor says which local workloads istiod knows no WorkloadEntry of, and which it has yet to auto-register.
func TestDoctorIstiodEntries(t *testing.T) {
	d := &admin.Dump{Config: &config.Config{Workloads: []config.Workload{{Name: "web", Namespace: "shop"}, {Name: "db", Namespace: "shop", AutoRegister: "db"}}},
		Workloads: []*state.Workload{{UID: "vm-1/shop/web", Name: "web", Namespace: "shop", Local: true}, {UID: "vm-1/shop/db", Name: "db", Namespace: "shop", Local: true},
			{UID: "Kubernetes//Pod/shop/x", Name: "x", Namespace: "shop"}},
		IstiodEntries: map[string]string{"vm-1/shop/web": "Kubernetes/networking.istio.io/WorkloadEntry/shop/web"}}
	if c := checkIstiodEntries(d); c.OK || !strings.Contains(c.Detail, "has not registered shop/db (auto_register db)") {
		t.Errorf("db not yet auto-registered: %+v", c)
	}
	d.IstiodEntries["vm-1/shop/db"] = "Kubernetes/networking.istio.io/WorkloadEntry/shop/db-10.0.0.8"
	if c := checkIstiodEntries(d); !c.OK {
		t.Errorf("both known: %+v", c)
	}
	delete(d.IstiodEntries, "vm-1/shop/web")
	if c := checkIstiodEntries(d); c.OK || !strings.Contains(c.Detail, "no WorkloadEntry for shop/web") || !strings.Contains(c.Fix, "export kubernetes") {
		t.Errorf("web unknown to istiod: %+v", c)
	}
}
