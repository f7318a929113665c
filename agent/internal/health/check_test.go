package health

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

var target = netip.MustParseAddrPort("10.0.0.5:8080")

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check Check
		want  string // "" = valid
	}{
		{"tcp defaults", Check{Kind: KindTCP, Target: target}, ""},
		{"http defaults", Check{Kind: KindHTTP, Target: target}, ""},
		{"http full", Check{Kind: KindHTTP, Target: target, Path: "/healthz?deep=1", Interval: time.Second,
			Timeout: time.Second, UnhealthyThreshold: 3, HealthyThreshold: 2}, ""},
		{"ipv6", Check{Kind: KindTCP, Target: netip.MustParseAddrPort("[fd00::5]:80")}, ""},
		{"short interval lowers the default timeout", Check{Kind: KindTCP, Target: target, Interval: 100 * time.Millisecond}, ""},
		{"no kind", Check{Target: target}, `unknown kind ""`},
		{"unknown kind", Check{Kind: "udp", Target: target}, `unknown kind "udp" (want "tcp" or "http")`},
		{"no target", Check{Kind: KindTCP}, "no target address"},
		{"port 0", Check{Kind: KindTCP, Target: netip.AddrPortFrom(target.Addr(), 0)}, "target 10.0.0.5: port 0"},
		{"timeout > interval", Check{Kind: KindTCP, Target: target, Interval: time.Second, Timeout: 2 * time.Second},
			"timeout 2s is longer than the interval 1s"},
		{"default timeout > interval is impossible", Check{Kind: KindTCP, Target: target, Interval: time.Millisecond}, ""},
		{"negative interval", Check{Kind: KindTCP, Target: target, Interval: -time.Second}, "interval -1s is negative"},
		{"negative timeout", Check{Kind: KindTCP, Target: target, Timeout: -time.Second}, "timeout -1s is negative"},
		{"unhealthy threshold", Check{Kind: KindTCP, Target: target, UnhealthyThreshold: -1}, "unhealthy threshold -1: want at least 1"},
		{"healthy threshold", Check{Kind: KindTCP, Target: target, HealthyThreshold: -2}, "healthy threshold -2: want at least 1"},
		{"relative path", Check{Kind: KindHTTP, Target: target, Path: "healthz"}, `path "healthz": must start with /`},
		{"path with space", Check{Kind: KindHTTP, Target: target, Path: "/a b"}, "no spaces"},
		{"path with fragment", Check{Kind: KindHTTP, Target: target, Path: "/a#b"}, "fragment"},
		{"path on tcp", Check{Kind: KindTCP, Target: target, Path: "/"}, "only http checks have a path"},
		{"all at once", Check{Kind: "icmp", Interval: -1, UnhealthyThreshold: -1},
			`health: unknown kind "icmp" (want "tcp" or "http"); no target address; interval -1ns is negative; unhealthy threshold -1: want at least 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.check.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Validate: nil, want %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Validate: %q, want it to contain %q", err, tc.want)
			case err != nil && !strings.HasPrefix(err.Error(), "health: "):
				t.Fatalf("Validate: %q does not start with health:", err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	k := Check{Kind: KindHTTP, Target: target}.withDefaults()
	want := Check{Kind: KindHTTP, Target: target, Path: "/", Interval: 2 * time.Second, Timeout: time.Second,
		UnhealthyThreshold: 2, HealthyThreshold: 1}
	if k != want {
		t.Fatalf("withDefaults = %+v, want %+v", k, want)
	}
	if p := (Check{Kind: KindTCP, Target: target}).withDefaults().Path; p != "" {
		t.Fatalf("tcp check got path %q", p)
	}
	if to := (Check{Kind: KindTCP, Target: target, Interval: 300 * time.Millisecond}).withDefaults().Timeout; to != 300*time.Millisecond {
		t.Fatalf("default timeout with a 300ms interval = %v", to)
	}
}

func TestBounds(t *testing.T) {
	for _, tc := range []struct {
		check               Check
		detection, recovery time.Duration
	}{
		{Check{Kind: KindTCP, Target: target}, 5 * time.Second, 3 * time.Second},
		{Check{Kind: KindTCP, Target: target, Interval: 500 * time.Millisecond}, 1500 * time.Millisecond, time.Second},
		{Check{Kind: KindHTTP, Target: target, Interval: 10 * time.Second, Timeout: 3 * time.Second,
			UnhealthyThreshold: 3, HealthyThreshold: 2}, 33 * time.Second, 23 * time.Second},
	} {
		if got := tc.check.DetectionBound(); got != tc.detection {
			t.Errorf("%+v: DetectionBound = %v, want %v", tc.check, got, tc.detection)
		}
		if got := tc.check.RecoveryBound(); got != tc.recovery {
			t.Errorf("%+v: RecoveryBound = %v, want %v", tc.check, got, tc.recovery)
		}
	}
}
