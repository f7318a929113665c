package identity_test

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/tests/spire"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// spireSVIDTTL is the X.509 SVID lifetime of the real-SPIRE test's entries. SPIRE has no minimum; its agent
// renews at about half the lifetime (which includes the server's 10 s of backdating) and syncs every 5 s, so a
// rotation shows within about 25 s.
const spireSVIDTTL = 30 * time.Second

// TestSpireSourceWithRealSPIRE runs a real SPIRE server and agent (tests/spire), registers two workload
// identities for this process, and checks that the spire source waits for the agent's socket, receives both
// SVIDs, serves them in HBONE handshakes, and that after SPIRE rotates them a new handshake presents the new
// certificate while the connection made before keeps working.
func TestSpireSourceWithRealSPIRE(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("real SPIRE takes about 25 s; not in -short")
	}
	start := time.Now()
	d := spire.StartServer(t, "mesh.test")
	t.Logf("spire-server healthy after %s", time.Since(start).Round(time.Millisecond))
	web, _ := identity.IstioID(d.TrustDomain, "shop", "web")
	db, _ := identity.IstioID(d.TrustDomain, "shop", "db")
	token, agentID := d.JoinToken()
	d.RegisterForThisProcess(agentID, web, spireSVIDTTL)
	d.RegisterForThisProcess(agentID, db, spireSVIDTTL)

	// The source starts before the SPIRE agent: it waits for the socket and is not ready meanwhile.
	var log logBuffer
	src, err := identity.New(identity.Options{
		Source: identity.SourceSpire, SpireSocket: d.AgentSocket, TrustDomain: d.TrustDomain,
		Identities: []spiffeid.ID{web, db}, Logger: log.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, src)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("identity log:\n%s", log.String())
		}
	})
	time.Sleep(time.Second)
	if src.Ready() {
		t.Fatal("ready before the SPIRE agent runs")
	}

	d.StartAgent(token)
	if err := spire.WaitFor(60*time.Second, func() error {
		if !src.Ready() {
			return errors.New("not ready")
		}
		return nil
	}); err != nil {
		t.Fatalf("spire source: %v", err)
	}
	t.Logf("spire source ready %s after the start", time.Since(start).Round(time.Millisecond))
	for _, c := range src.Certificates() {
		life := c.NotAfter.Sub(c.NotBefore)
		t.Logf("holds %s %s serial %s, lifetime %s", c.Kind, c.Identity, c.Serial, life)
		if c.Kind == identity.KindWorkload && life > spireSVIDTTL+15*time.Second {
			t.Errorf("%s lives %s; want the entry's %s (plus SPIRE's backdating)", c.Identity, life, spireSVIDTTL)
		}
	}

	srv := startTLSServer(t, "127.0.0.1:0", identity.ServerTLSConfig(src, onlyAddr("127.0.0.1", web)))
	client := identity.ClientTLSConfig(src, db, []spiffeid.ID{web})
	first, err := dial(t, srv.addr(), client)
	if err != nil {
		t.Fatalf("handshake with SPIRE SVIDs: %v", err)
	}
	h := srv.next(t)
	firstSerial := peerSerial(first.ConnectionState())
	if want := heldSerial(src, web); firstSerial != want {
		t.Fatalf("server presented serial %s; want the SPIRE SVID's %s", firstSerial, want)
	}
	if id, err := identity.PeerID(h.state); err != nil || id != db {
		t.Fatalf("server sees client %v, %v; want %s", id, err, db)
	}

	rotation := time.Now()
	if err := spire.WaitFor(90*time.Second, func() error {
		if got := heldSerial(src, web); got == firstSerial {
			return fmt.Errorf("serial still %s", got)
		}
		return nil
	}); err != nil {
		t.Fatalf("SPIRE rotation of %s: %v", web, err)
	}
	t.Logf("rotation seen %s after the first handshake", time.Since(rotation).Round(time.Millisecond))

	second, err := dial(t, srv.addr(), client)
	if err != nil {
		t.Fatalf("handshake after rotation: %v", err)
	}
	srv.next(t)
	if got, want := peerSerial(second.ConnectionState()), heldSerial(src, web); got == firstSerial || got != want {
		t.Errorf("after rotation the server presented serial %s; want the new %s (first was %s)", got, want, firstSerial)
	}
	if err := echo(first); err != nil {
		t.Errorf("the connection made before the rotation broke: %v", err)
	}
}

func heldSerial(src identity.Source, id spiffeid.ID) string {
	c, ok := src.Snapshot().Certificate(id)
	if !ok {
		return ""
	}
	return c.Leaf.SerialNumber.Text(16)
}
