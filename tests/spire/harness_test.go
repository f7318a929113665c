package spire_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/spire"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestHarnessIssuesSVIDs checks the harness itself with go-spiffe's client: this process, registered for two
// identities, receives an SVID for each from the agent.
func TestHarnessIssuesSVIDs(t *testing.T) {
	d := spire.StartServer(t, "harness.test")
	a := spiffeid.RequireFromString("spiffe://harness.test/ns/shop/sa/web")
	b := spiffeid.RequireFromString("spiffe://harness.test/ns/shop/sa/db")
	token, agent := d.JoinToken()
	d.RegisterForThisProcess(agent, a, time.Minute)
	d.RegisterForThisProcess(agent, b, time.Minute)
	d.StartAgent(token)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var got map[spiffeid.ID]bool
	err := spire.WaitFor(60*time.Second, func() error {
		svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+d.AgentSocket))
		if err != nil {
			return err
		}
		got = map[spiffeid.ID]bool{}
		for _, s := range svids {
			got[s.ID] = true
		}
		if !got[a] || !got[b] {
			return fmt.Errorf("got %v", got)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("SVIDs for %s and %s: %v", a, b, err)
	}
}
