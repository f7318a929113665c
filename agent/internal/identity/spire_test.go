package identity_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
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
