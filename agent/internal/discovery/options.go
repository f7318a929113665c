package discovery

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

// Options configure a Discovery. The app fills them from config.Gossip; Tuning is for tests and benchmarks.
type Options struct {
	// NodeName is this node's name in the pool (config node.name): a DNS label, unique in the mesh.
	NodeName string
	// Bind is where memberlist listens, TCP and UDP. Port 0 picks a free port (tests).
	Bind netip.AddrPort
	// Advertise is the address other nodes reach this one on; zero means the bind address (or, when bind is
	// 0.0.0.0, a private address of this host).
	Advertise netip.AddrPort
	// Join are the seeds, "host:port" or "ip:port". Empty: this node waits to be joined.
	Join []string
	// Keys are the gossip keys, the first one used to send. When nil they are read from KeyFile.
	Keys    [][]byte
	KeyFile string
	// InsecureDevMode allows running without a key (plaintext gossip) and accepts plaintext from peers even with
	// one. Never in production.
	InsecureDevMode bool
	// GracePeriod is how long the records of a node that left or failed stay in use.
	GracePeriod time.Duration
	// AgentVersion goes into this node's record when SetLocal's record has none.
	AgentVersion string
	// Trust signs this node's claims and checks the peers' (proof.go). Required.
	Trust Trust
	// GatewayIdentities are the identities, "namespace/service_account", a peer's east-west gateway may have:
	// a gateway declared with any other is ignored. Nil: DefaultGatewayIdentities.
	GatewayIdentities []string
	Logger            *slog.Logger
	Tuning            Tuning
}

// Tuning holds the protocol timings. Zero fields take the production defaults; tests shorten them.
type Tuning struct {
	// Memberlist, when set, adjusts memberlist's configuration after discovery has filled it in: intervals,
	// a wrapped Transport.
	Memberlist func(*memberlist.Config)
	// JoinBackoffMin and JoinBackoffMax bound the exponential backoff of joining while no seed answers
	// (defaults 1s and 30s).
	JoinBackoffMin, JoinBackoffMax time.Duration
	// Reconnect is how often a node that is not alone tries to rejoin one node that is down, or a seed that is
	// not a member, so that a healed partition merges (default 30s).
	Reconnect time.Duration
	// ReconnectTimeout is how long the address of a node that went down is kept for that (default 6h).
	ReconnectTimeout time.Duration
	// RepairDelay is how long an advertised record may take to arrive by gossip before it is asked for
	// directly (default 2s); it is asked for again every two RepairDelays while still missing.
	RepairDelay time.Duration
	// LeaveTimeout bounds the graceful leave on shutdown (default 3s).
	LeaveTimeout time.Duration
	// PublishBurst and PublishEvery pace this node's record changes (defaults 5 and 5s): up to PublishBurst at
	// once, then one every PublishEvery; a change past them is published, with any that follow it, when its
	// turn comes. A pool carries only a few record changes a second by gossip (docs/scale.md), so one host
	// whose workloads' health flaps must not take them all.
	PublishBurst int
	PublishEvery time.Duration
	// WarnInterval is the rate limit of repeated warnings about dropped input (default 10s).
	WarnInterval time.Duration
}

func (t Tuning) withDefaults() Tuning {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&t.JoinBackoffMin, time.Second)
	def(&t.JoinBackoffMax, 30*time.Second)
	def(&t.Reconnect, 30*time.Second)
	def(&t.ReconnectTimeout, 6*time.Hour)
	def(&t.RepairDelay, 2*time.Second)
	def(&t.LeaveTimeout, 3*time.Second)
	def(&t.WarnInterval, 10*time.Second)
	def(&t.PublishEvery, 5*time.Second)
	if t.PublishBurst <= 0 {
		t.PublishBurst = 5
	}
	t.JoinBackoffMax = max(t.JoinBackoffMax, t.JoinBackoffMin)
	return t
}

// validate checks the options and loads the keys. It returns the keys to use (nil: plaintext, dev mode only).
func (o *Options) validate() ([][]byte, error) {
	if !config.IsDNSLabel(o.NodeName) {
		return nil, fmt.Errorf("gossip: node name %q is not a DNS label", o.NodeName)
	}
	if !o.Bind.IsValid() {
		return nil, errors.New("gossip: no bind address")
	}
	if o.Advertise.IsValid() && (o.Advertise.Addr().IsUnspecified() || o.Advertise.Port() == 0) {
		return nil, fmt.Errorf("gossip: advertise address %s is unspecified", o.Advertise)
	}
	if !o.Advertise.IsValid() && o.Bind.Addr().IsUnspecified() && o.Bind.Addr().Is6() {
		return nil, fmt.Errorf("gossip: bind %s needs an advertise address", o.Bind)
	}
	if o.Trust.Bundles == nil || o.Trust.SVID == nil {
		return nil, errors.New("gossip: no trust: records cannot be signed or checked")
	}
	if o.GracePeriod < 0 {
		return nil, fmt.Errorf("gossip: negative grace period %s", o.GracePeriod)
	}
	for i, s := range o.Join {
		if s == "" {
			return nil, fmt.Errorf("gossip: seed %d is empty", i+1)
		}
	}
	keys := o.Keys
	if keys == nil && o.KeyFile != "" {
		var err error
		keys, err = ReadKeyFile(o.KeyFile)
		if errors.Is(err, fs.ErrNotExist) && o.InsecureDevMode {
			keys, err = nil, nil
		}
		if err != nil {
			return nil, err
		}
	}
	if len(keys) == 0 && !o.InsecureDevMode {
		return nil, errors.New("gossip: encryption is required: no key (set gossip.key_file, or gossip.insecure_dev_mode for a test mesh)")
	}
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("gossip: key %d is %d bytes, want %d", i+1, len(k), KeySize)
		}
	}
	return keys, nil
}

// keyFileExposed reports whether other users can read the key file.
func keyFileExposed(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().Perm()&0o004 != 0
}
