package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func TestIPv4Routes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "route")
	table := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth0\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
	if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
	routes, err := ipv4Routes(path)
	if err != nil || len(routes) != 1 || routes[0] != netip.MustParsePrefix("10.77.0.0/24") {
		t.Fatalf("routes = %v, %v", routes, err)
	}
	if covered(routes, netip.MustParseAddr("240.240.1.2")) || !covered(routes, netip.MustParseAddr("10.77.0.9")) {
		t.Error("covered is wrong")
	}
	withDefault := table + "eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
	if err := os.WriteFile(path, []byte(withDefault), 0o644); err != nil {
		t.Fatal(err)
	}
	if routes, _ = ipv4Routes(path); !covered(routes, netip.MustParseAddr("240.240.1.2")) {
		t.Errorf("a default route covers every VIP: %v", routes)
	}
}
