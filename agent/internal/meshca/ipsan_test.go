package meshca_test

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/meshca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestIssuePutsIPSANsNextToTheURI(t *testing.T) {
	ca, err := meshca.Init(filepath.Join(t.TempDir(), "ca"), td)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://mesh.example/ns/shop/sa/web")
	svid, err := ca.Issue(id, time.Hour, netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5"))
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Leaf
	var got []string
	for _, ip := range leaf.IPAddresses {
		got = append(got, ip.String())
	}
	if !slices.Equal(got, []string{"10.0.0.5", "fd00::5"}) {
		t.Errorf("IP SANs %v; want exactly [10.0.0.5 fd00::5]", got)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() || len(leaf.DNSNames)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("other SANs: URIs %v, DNS %v, emails %v; want only %s", leaf.URIs, leaf.DNSNames, leaf.EmailAddresses, id)
	}
}

func TestIssueRefusesBadIPSANs(t *testing.T) {
	ca, err := meshca.Init(filepath.Join(t.TempDir(), "ca"), td)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://mesh.example/ns/shop/sa/web")
	for _, tc := range []struct {
		ips  []netip.Addr
		want string
	}{
		{[]netip.Addr{{}}, "not an IP address"},
		{[]netip.Addr{netip.MustParseAddr("127.0.0.1")}, "127.0.0.1 is loopback"},
		{[]netip.Addr{netip.MustParseAddr("fe80::1%eth0")}, "fe80::1%eth0 has a zone"},
		{[]netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("::ffff:10.0.0.5")}, "10.0.0.5 is given twice"},
	} {
		if _, err := ca.Issue(id, time.Hour, tc.ips...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Issue with IP SANs %v = %v; want an error containing %q", tc.ips, err, tc.want)
		}
	}
}

func TestParseIPSAN(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.5":        "10.0.0.5",
		"fd00:0::5":       "fd00::5",
		"::ffff:10.0.0.5": "10.0.0.5", // as x509 would encode it
		"192.168.1.10":    "192.168.1.10",
	} {
		got, err := meshca.ParseIPSAN(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseIPSAN(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for in, why := range map[string]string{
		"":                 "is not an IP address",
		"10.0.0":           "is not an IP address",
		"10.0.0.0/8":       "is not an IP address",
		"web.shop":         "is not an IP address",
		"fe80::1%eth0":     "has a zone",
		"0.0.0.0":          "is unspecified",
		"::":               "is unspecified",
		"::ffff:0.0.0.0":   "is unspecified",
		"224.0.0.1":        "is multicast",
		"ff02::1":          "is multicast",
		"127.0.0.1":        "is loopback",
		"127.1.2.3":        "is loopback",
		"::1":              "is loopback",
		"::ffff:127.0.0.1": "is loopback",
	} {
		_, err := meshca.ParseIPSAN(in)
		if err == nil || !strings.Contains(err.Error(), `"`+in+`" `+why) {
			t.Errorf("ParseIPSAN(%q) = %v; want an error naming %q and saying it %s", in, err, in, why)
		}
	}
}
