package capture

import (
	"context"
	"strings"
	"testing"

	"github.com/ambient-agent/ambient-agent/nft"
)

// An invalid spec is refused before anything reaches the kernel, so this runs
// without root.
func TestInstallRejectsInvalidSpec(t *testing.T) {
	c := New()
	err := c.Install(context.Background(), nft.Spec{Inbound: true, OutboundPort: 15006})
	if err == nil || !strings.Contains(err.Error(), "OutboundPort") {
		t.Fatalf("Install: got %v, want an error naming OutboundPort", err)
	}
	if c.Installed() != nil {
		t.Error("Installed() is not nil after a failed Install")
	}
}

func TestInstallHonoursCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := New().Install(ctx, nft.Spec{}); err == nil {
		t.Fatal("Install with a canceled context succeeded")
	}
}
