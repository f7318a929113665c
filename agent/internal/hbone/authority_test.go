package hbone

import (
	"net/netip"
	"testing"
)

func TestParseAuthority(t *testing.T) {
	good := []struct {
		in   string
		want Authority
	}{
		{"10.0.0.5:8080", Authority{Addr: netip.MustParseAddrPort("10.0.0.5:8080"), Port: 8080}},
		{"[fd00::5]:443", Authority{Addr: netip.MustParseAddrPort("[fd00::5]:443"), Port: 443}},
		{"[::ffff:10.0.0.5]:80", Authority{Addr: netip.MustParseAddrPort("10.0.0.5:80"), Port: 80}},
		{"reviews.default.svc.cluster.local:9080", Authority{Host: "reviews.default.svc.cluster.local", Port: 9080}},
		{"Echo.Example:1", Authority{Host: "echo.example", Port: 1}},
		{"1.2.3.4:65535", Authority{Addr: netip.MustParseAddrPort("1.2.3.4:65535"), Port: 65535}},
	}
	for _, tc := range good {
		got, err := ParseAuthority(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseAuthority(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	bad := []string{
		"", ":", "10.0.0.5", "10.0.0.5:", "10.0.0.5:0", "10.0.0.5:65536", "10.0.0.5:080", "10.0.0.5:+80",
		"10.0.0.5: 80", "fd00::5:80", "[fd00::5:80", "[fd00::5]", "[10.0.0.5]:80", "[fe80::1%eth0]:80",
		"user@host:80", "host/path:80", "-host:80", "host-:80", "ho st:80", "01.2.3.4:80", "1.2.3.256:80",
		"host..example:80", "host.:80", ".host:80", "999:80",
	}
	for _, in := range bad {
		if a, err := ParseAuthority(in); err == nil {
			t.Errorf("ParseAuthority(%q) = %+v, want an error", in, a)
		}
	}
}

// FuzzParseAuthority: parsing never panics, and whatever parses prints back to something that parses to the
// same value, with the invariants the server relies on (a port, an address xor a hostname).
func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"10.0.0.5:8080", "[fd00::5]:443", "reviews.default.svc.cluster.local:9080", "127.0.0.1:15008", "[::ffff:1.2.3.4]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAuthority(s)
		if err != nil {
			return
		}
		if a.Port == 0 || a.IsHostname() == a.Addr.IsValid() {
			t.Fatalf("%q parsed to %+v", s, a)
		}
		if a.Addr.IsValid() && (a.Addr.Port() != a.Port || a.Addr.Addr().Is4In6() || a.Addr.Addr().Zone() != "") {
			t.Fatalf("%q parsed to %+v", s, a)
		}
		b, err := ParseAuthority(a.String())
		if err != nil || b != a {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, a, a.String(), b, err)
		}
	})
}
