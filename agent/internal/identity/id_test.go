package identity_test

import (
	"testing"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestIstioID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	for _, tc := range []struct{ ns, sa, want string }{
		{"bookinfo", "reviews", "spiffe://cluster.local/ns/bookinfo/sa/reviews"},
		{"", "", "spiffe://cluster.local/ns/default/sa/default"},
		{"prod", "", "spiffe://cluster.local/ns/prod/sa/default"},
	} {
		id, err := identity.IstioID(td, tc.ns, tc.sa)
		if err != nil || id.String() != tc.want {
			t.Errorf("IstioID(%q, %q) = %v, %v; want %s", tc.ns, tc.sa, id, err, tc.want)
			continue
		}
		ns, sa, ok := identity.ParseIstioID(id)
		if !ok || id.String() != "spiffe://cluster.local/ns/"+ns+"/sa/"+sa {
			t.Errorf("ParseIstioID(%s) = %q, %q, %v", id, ns, sa, ok)
		}
	}
	if _, err := identity.IstioID(td, "bad/ns", "sa"); err == nil {
		t.Error("IstioID accepted a namespace with a slash")
	}
	for _, s := range []string{
		"spiffe://cluster.local/ns/a/sa", "spiffe://cluster.local/ns/a/sa/b/c", "spiffe://cluster.local/x/a/sa/b",
		"spiffe://cluster.local", "spiffe://cluster.local/ns/a/xx/b",
	} {
		if ns, sa, ok := identity.ParseIstioID(spiffeid.RequireFromString(s)); ok {
			t.Errorf("ParseIstioID(%s) = %q, %q, true; want not ok", s, ns, sa)
		}
	}
}

func TestNewValidatesOptions(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	good := spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/b")
	for name, tc := range map[string]struct {
		opts identity.Options
		want string
	}{
		"unknown source":     {identity.Options{Source: "vault", TrustDomain: td}, `source "vault"`},
		"no trust domain":    {identity.Options{Source: "spire", SpireSocket: "/run/x.sock"}, "trust domain is required"},
		"relative dir":       {identity.Options{Source: "files", Dir: "identity", TrustDomain: td}, "not an absolute path"},
		"relative socket":    {identity.Options{Source: "spire", SpireSocket: "api.sock", TrustDomain: td}, "not an absolute path"},
		"other trust domain": {identity.Options{Source: "spire", SpireSocket: "/s", TrustDomain: td, Identities: []spiffeid.ID{spiffeid.RequireFromString("spiffe://other/ns/a/sa/b")}}, "not in trust domain"},
		"non-istio for files": {identity.Options{Source: "files", Dir: "/x", TrustDomain: td,
			Identities: []spiffeid.ID{spiffeid.RequireFromString("spiffe://cluster.local/web")}}, "not of the form"},
		"empty identity": {identity.Options{Source: "spire", SpireSocket: "/s", TrustDomain: td, Identities: []spiffeid.ID{good, {}}}, "identity is empty"},
	} {
		_, err := identity.New(tc.opts)
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("%s: New = %v; want an error containing %q", name, err, tc.want)
		}
	}
	src, err := identity.New(identity.Options{Source: "spire", SpireSocket: "/nonexistent/api.sock", TrustDomain: td, Identities: []spiffeid.ID{good}})
	if err != nil {
		t.Fatalf("New(spire) = %v", err)
	}
	if src.Ready() {
		t.Error("a spire source is ready before it has talked to SPIRE")
	}
}
