package identity_test

import (
	"testing"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestRotationReachesNewHandshakesOnly rotates both sides' files: the next handshake presents the new
// certificates, and the connection made before keeps working.
func TestRotationReachesNewHandshakesOnly(t *testing.T) {
	f := newFilesFixture(t, idA, idB)
	src, err := identity.New(f.options(nil, idA, idB))
	if err != nil {
		t.Fatal(err)
	}
	run(t, src)
	srv := startTLSServer(t, "127.0.0.1:0", identity.ServerTLSConfig(src, onlyAddr("127.0.0.1", idA)))
	client := identity.ClientTLSConfig(src, idB, []spiffeid.ID{idA})

	before, err := dial(t, srv.addr(), client)
	if err != nil {
		t.Fatal(err)
	}
	if got := peerSerial(before.ConnectionState()); got != serial(f.certs[idA]) {
		t.Fatalf("server presented %s; want %s", got, serial(f.certs[idA]))
	}
	if got := peerSerial(srv.next(t).state); got != serial(f.certs[idB]) {
		t.Fatalf("client presented %s; want %s", got, serial(f.certs[idB]))
	}

	newA, newB := f.ca.workload(t, idA), f.ca.workload(t, idB)
	writePair(t, f.dir, idA, newA.chainPEM, newA.keyPEM)
	writePair(t, f.dir, idB, newB.chainPEM, newB.keyPEM)
	waitSerial(t, src, idA, serial(newA))
	waitSerial(t, src, idB, serial(newB))

	after, err := dial(t, srv.addr(), client)
	if err != nil {
		t.Fatal(err)
	}
	if got := peerSerial(after.ConnectionState()); got != serial(newA) {
		t.Errorf("after rotation the server presented %s; want the new %s", got, serial(newA))
	}
	if got := peerSerial(srv.next(t).state); got != serial(newB) {
		t.Errorf("after rotation the client presented %s; want the new %s", got, serial(newB))
	}
	if err := echo(before); err != nil {
		t.Errorf("the connection made before the rotation broke: %v", err)
	}
}
