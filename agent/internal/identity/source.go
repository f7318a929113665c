package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Source holds the certificates of the local workloads and the trust bundle, and keeps them current.
type Source interface {
	// Run keeps the certificates current (polls the files, or streams from SPIRE, retrying with backoff while
	// the socket is not there) until ctx is done. It returns nil when ctx is done. Call it once.
	Run(ctx context.Context) error
	// Ready reports whether every wanted identity has a currently valid certificate and the bundle is there.
	Ready() bool
	// Snapshot returns the current certificates and bundle; never nil. TLS handshakes read it.
	Snapshot() *Snapshot
	// Changed receives a value after the Snapshot changed. It is 1-buffered: a slow reader sees one
	// notification for several changes and should read Snapshot again.
	Changed() <-chan struct{}
	// Certificates lists the held certificates (never keys), for /config_dump and expiry metrics.
	Certificates() []CertInfo
}

// Source kinds, as in [identity] source.
const (
	SourceFiles = "files"
	SourceSpire = "spire"
	SourceIstio = "istio"
)

// DefaultPollInterval is how often the files source looks for changed files.
const DefaultPollInterval = time.Second

// Options configure New.
type Options struct {
	// Source is SourceFiles, SourceSpire or SourceIstio.
	Source string
	// Dir is the files source's directory (see BundlePath, ChainPath, KeyPath).
	Dir string
	// SpireSocket is the path of the SPIRE agent's Workload API socket.
	SpireSocket string
	// Istio configures the istio source: istiod's CA and the service-account tokens.
	Istio IstioOptions
	// TrustDomain is the mesh's trust domain; every identity must belong to it.
	TrustDomain spiffeid.TrustDomain
	// Identities are the local workloads' identities: the only ones the Source holds certificates for.
	// The files and istio sources need them in the Istio form (spiffe://td/ns/NS/sa/SA), which names their files.
	Identities []spiffeid.ID
	// Logger receives reload and rotation events and errors; nil discards them.
	Logger *slog.Logger
	// PollInterval is how often the files source checks its files; zero means DefaultPollInterval.
	PollInterval time.Duration
}

// New validates opts and builds the Source. It does not wait for anything. The files source loads its files
// once here and refuses to start (returns the error, naming the file and identity) when any of them is missing
// or invalid; the istio source reads its root certificate here; the spire and istio sources start without
// certificates and not ready, and connect in Run.
func New(opts Options) (Source, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	want := dedupe(opts.Identities)
	switch opts.Source {
	case SourceFiles:
		interval := opts.PollInterval
		if interval <= 0 {
			interval = DefaultPollInterval
		}
		return newFilesSource(opts.Dir, opts.TrustDomain, want, interval, log.With("source", SourceFiles), time.Now)
	case SourceIstio:
		return newIstioSource(opts.Istio, opts.TrustDomain, want, log.With("source", SourceIstio), time.Now)
	default:
		return newSpireSource(opts.SpireSocket, opts.TrustDomain, want, log.With("source", SourceSpire), time.Now), nil
	}
}

func (o Options) validate() error {
	var errs []error
	if o.TrustDomain.IsZero() {
		errs = append(errs, errors.New("trust domain is required"))
	}
	switch o.Source {
	case SourceFiles:
		if !filepath.IsAbs(o.Dir) {
			errs = append(errs, fmt.Errorf("files source: dir %q is not an absolute path", o.Dir))
		}
	case SourceSpire:
		if !filepath.IsAbs(o.SpireSocket) {
			errs = append(errs, fmt.Errorf("spire source: socket %q is not an absolute path", o.SpireSocket))
		}
	case SourceIstio:
		errs = append(errs, o.Istio.validate()...)
	default:
		errs = append(errs, fmt.Errorf("source %q is not %q, %q or %q", o.Source, SourceFiles, SourceSpire, SourceIstio))
	}
	for _, id := range o.Identities {
		switch {
		case id.IsZero():
			errs = append(errs, errors.New("an identity is empty"))
		case !id.MemberOf(o.TrustDomain):
			errs = append(errs, fmt.Errorf("identity %s is not in trust domain %q", id, o.TrustDomain))
		case o.Source == SourceFiles || o.Source == SourceIstio:
			if _, _, ok := ParseIstioID(id); !ok {
				errs = append(errs, fmt.Errorf("%s source: identity %s is not of the form spiffe://<td>/ns/<ns>/sa/<sa>", o.Source, id))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}

func dedupe(ids []spiffeid.ID) []spiffeid.ID {
	seen := map[spiffeid.ID]bool{}
	var out []spiffeid.ID
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
