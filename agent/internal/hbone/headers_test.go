package hbone

import (
	"context"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/net/http2"
)

func TestBaggage(t *testing.T) {
	for _, tc := range []struct {
		b    Baggage
		want string
	}{
		{Baggage{}, ""},
		{Baggage{Namespace: "ns"}, "k8s.namespace.name=ns"},
		{Baggage{WorkloadType: "pod", WorkloadName: "w", ServiceVersion: "v2"}, "k8s.pod.name=w,service.version=v2"},
		{Baggage{ClusterName: "c", Namespace: "n", WorkloadName: "w", ServiceName: "s", ServiceVersion: "v", Region: "r", AvailabilityZone: "z"},
			"k8s.cluster.name=c,k8s.namespace.name=n,k8s.deployment.name=w,service.name=s,service.version=v,cloud.region=r,cloud.availability_zone=z"},
	} {
		if got := tc.b.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.b, got, tc.want)
		}
	}
}

func TestForwarded(t *testing.T) {
	if got := forwardedValue(netip.MustParseAddrPort("[fd00::1]:80"), ""); got != `for="[fd00::1]:80"` {
		t.Errorf("got %s", got)
	}
	if got := forwardedValue(netip.AddrPort{}, "h"); got != "" {
		t.Errorf("no client: %q", got)
	}
	for in, want := range map[string]string{
		`for="10.1.2.3:4000";host=web`:         "10.1.2.3:4000",
		`for="[fd00::1]:80"`:                   "[fd00::1]:80",
		`for=10.1.2.3`:                         "10.1.2.3:0",
		`host=x;for="10.0.0.1:1", for=1.1.1.1`: "10.0.0.1:1",
		`for=unknown`:                          "invalid AddrPort",
		``:                                     "invalid AddrPort",
	} {
		if got := parseForwardedFor(in).String(); got != want {
			t.Errorf("parseForwardedFor(%q) = %s, want %s", in, got, want)
		}
	}
	for in, want := range map[string]string{
		`for="10.1.2.3:4000";host=Web.NS.svc.cluster.local`: "web.ns.svc.cluster.local",
		`for="10.1.2.3:4000";host="a.example"`:              "a.example",
		`for="10.1.2.3:4000", for=1.1.1.1;host=other`:       "",
		`for="10.1.2.3:4000"`:                               "",
	} {
		if got := parseForwardedHost(in); got != want {
			t.Errorf("parseForwardedHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTraceparent(t *testing.T) {
	re := regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-00$`)
	seen := map[string]bool{}
	for range 100 {
		tp := newTraceparent()
		if !re.MatchString(tp) || seen[tp] {
			t.Fatalf("traceparent %q malformed or repeated", tp)
		}
		seen[tp] = true
	}
}

func TestFlagStatus(t *testing.T) {
	for f, want := range map[Flag]int{
		FlagBadRequest: 400, FlagWrongTarget: 400, FlagDenied: 401, FlagHeadersTooLarge: 431,
		FlagUnknownWorkload: 503, FlagIllegalPort: 503, FlagUpstreamConnect: 503, FlagUpstreamTimeout: 503,
		FlagUnresolvable: 503, FlagInternal: 503, FlagNone: 200,
	} {
		if got := f.Status(); got != want {
			t.Errorf("%v.Status() = %d, want %d", f, got, want)
		}
	}
}

// The 200 carries the destination's baggage, as ztunnel answers; a refusal carries none.
func TestResponseBaggage(t *testing.T) {
	echo := echoServer(t)
	h := newHarness(t, harnessOpts{authorize: func(_ context.Context, req *Request) decision {
		d := allow(req.Target.Addr)
		d.baggage = Baggage{Namespace: "shop", WorkloadName: "web", ServiceName: "web", ServiceVersion: "v1"}
		return d
	}})
	rc := dialRaw(t, h)
	id := rc.connect(echo.String())
	f, err := rc.awaitFrame(func(f http2.Frame) bool {
		mh, ok := f.(*http2.MetaHeadersFrame)
		return ok && mh.StreamID == id
	})
	if err != nil {
		t.Fatal(err)
	}
	mh := f.(*http2.MetaHeadersFrame)
	var got string
	for _, hf := range mh.RegularFields() {
		if hf.Name == "baggage" {
			got = hf.Value
		}
	}
	if mh.PseudoValue("status") != "200" || !strings.Contains(got, "k8s.namespace.name=shop") || !strings.Contains(got, "service.name=web") {
		t.Fatalf("response %s with baggage %q", mh.PseudoValue("status"), got)
	}
}
