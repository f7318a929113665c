package identity_test

import (
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestSpireSourceWaitsForSocket: with no SPIRE agent the source keeps retrying, says why, stays not ready, and
// stops when asked. The real SPIRE test is tests/spire.
func TestSpireSourceWaitsForSocket(t *testing.T) {
	var log logBuffer
	src, err := identity.New(identity.Options{
		Source: identity.SourceSpire, SpireSocket: filepath.Join(t.TempDir(), "api.sock"),
		TrustDomain: tdLocal, Identities: []spiffeid.ID{idA}, Logger: log.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, src)
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(log.String(), "unavailable; retrying") < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(log.String(), "unavailable; retrying"); n < 2 {
		t.Errorf("%d retries logged in 5s; want at least 2:\n%s", n, log.String())
	}
	if src.Ready() || len(src.Certificates()) != 0 {
		t.Errorf("ready=%v, certificates %v without SPIRE", src.Ready(), src.Certificates())
	}
	stop()
}

// TestSpireSourceValidatesUpdates feeds the source what a SPIRE agent could push.
func TestSpireSourceValidatesUpdates(t *testing.T) {
	ca := newTestCA(t, "cluster.local")
	idC := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/unwanted")
	var log logBuffer
	src, err := identity.New(identity.Options{
		Source: identity.SourceSpire, SpireSocket: "/nonexistent/api.sock",
		TrustDomain: tdLocal, Identities: []spiffeid.ID{idA, idB}, Logger: log.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	bundles := x509bundle.NewSet(ca.bundle())
	a, b, c := ca.workload(t, idA), ca.workload(t, idB), ca.workload(t, idC)
	push := func(svids ...issued) {
		ctx := &workloadapi.X509Context{Bundles: bundles}
		for _, s := range svids {
			ctx.SVIDs = append(ctx.SVIDs, s.svid(t))
		}
		identity.SpireUpdate(src, ctx)
	}
	changed := func() bool {
		select {
		case <-src.Changed():
			return true
		default:
			return false
		}
	}

	push(a, b, c)
	if !src.Ready() || !changed() {
		t.Fatalf("ready=%v after SPIRE sent both identities; want ready and a change", src.Ready())
	}
	if _, held := src.Snapshot().SVID(idC); held {
		t.Error("the source holds an identity no local workload has")
	}
	push(a, b, c)
	if changed() {
		t.Error("an identical update signalled a change")
	}

	expired := ca.leaf(t, []string{idA.String()}, func(x *x509.Certificate) { x.NotAfter = time.Now().Add(-time.Second) })
	push(expired, b)
	if got := heldSerial(src, idA); got != serial(a) {
		t.Errorf("an expired SVID replaced the valid one: holds %s, want %s", got, serial(a))
	}
	if !strings.Contains(log.String(), "SVID for "+idA.String()+" refused") {
		t.Errorf("the refused SVID was not logged:\n%s", log.String())
	}

	push(a) // SPIRE no longer issues B (its entry was deleted): B is dropped.
	if _, held := src.Snapshot().SVID(idB); held || src.Ready() {
		t.Errorf("B still held (%v) or ready (%v) after SPIRE stopped issuing it", held, src.Ready())
	}
	if !strings.Contains(log.String(), "issued no SVID for "+idB.String()) {
		t.Errorf("the missing identity was not logged:\n%s", log.String())
	}

	b2 := ca.workload(t, idB)
	push(a, b2)
	if !src.Ready() || heldSerial(src, idB) != serial(b2) {
		t.Errorf("ready=%v, B serial %s after SPIRE issued B again; want ready with %s", src.Ready(), heldSerial(src, idB), serial(b2))
	}

	// An update without our trust domain's bundle keeps the previous bundle.
	other := newTestCA(t, "other.local")
	identity.SpireUpdate(src, &workloadapi.X509Context{Bundles: x509bundle.NewSet(other.bundle()), SVIDs: []*x509svid.SVID{a.svid(t), b2.svid(t)}})
	if _, err := src.Snapshot().GetX509BundleForTrustDomain(tdLocal); err != nil || !src.Ready() {
		t.Errorf("bundle %v, ready %v after an update without our bundle; want the previous bundle kept", err, src.Ready())
	}
}
