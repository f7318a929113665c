package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
)

// The rogue peer: this package's test binary, run with AMBIENT_ROGUE_PEER naming a spec file, is a gossip member
// that holds the gossip key and one valid certificate, and publishes whatever record the spec says, signed with
// that certificate: the attacker of docs/gossip.md's threat model. The lab tests (tests/e2e/rogue_test.go) build it
// with `go test -c` and run it in a lab host. Only the real discovery code runs: New, SetLocal (which validates
// and signs), memberlist.
func TestMain(m *testing.M) {
	if spec := os.Getenv("AMBIENT_ROGUE_PEER"); spec != "" {
		if err := runRoguePeer(spec); err != nil {
			fmt.Fprintln(os.Stderr, "rogue peer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// roguePeerSpec is what the rogue peer publishes and where.
type roguePeerSpec struct {
	Node        string   `json:"node"`
	Bind        string   `json:"bind"`
	Join        []string `json:"join"`
	KeyFile     string   `json:"keyFile"`
	IdentityDir string   `json:"identityDir"`
	// Identity is the one identity the rogue holds a certificate for (spiffe://td/ns/NS/sa/SA).
	Identity string `json:"identity"`
	// SignAnyIdentity signs every claim with that one certificate, whatever identity the claim names: a
	// record claiming identities its publisher does not hold.
	SignAnyIdentity bool   `json:"signAnyIdentity"`
	Record          Record `json:"record"`
}

func runRoguePeer(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var spec roguePeerSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	id, err := spiffeid.FromString(spec.Identity)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	src, err := identity.New(identity.Options{Source: identity.SourceFiles, Dir: spec.IdentityDir, TrustDomain: id.TrustDomain(),
		Identities: []spiffeid.ID{id}, Logger: log})
	if err != nil {
		return err
	}
	svid := func(want spiffeid.ID) (*x509svid.SVID, bool) {
		if want != id && !spec.SignAnyIdentity {
			return nil, false
		}
		return src.Snapshot().SVID(id)
	}
	d, err := New(Options{NodeName: spec.Node, Bind: netip.MustParseAddrPort(spec.Bind), Join: spec.Join, KeyFile: spec.KeyFile,
		GracePeriod: 2 * time.Second, AgentVersion: "rogue", Logger: log,
		Trust: Trust{Bundles: func() x509bundle.Source { return src.Snapshot() }, SVID: svid}})
	if err != nil {
		return err
	}
	if err := d.SetLocal(spec.Record); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return d.Run(ctx)
}
