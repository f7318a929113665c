package identity

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// filesSource reads the files layout (layout.go) and polls it for changes. Polling the contents, rather than
// watching inodes, makes write-then-rename, in-place rewrites and symlink swaps (Kubernetes-style ..data links)
// all work the same way.
type filesSource struct {
	*store
	dir      string
	interval time.Duration
	log      *slog.Logger

	// Owned by the goroutine that calls Run (and by New before that).
	seen     [32]byte // digest of the files at the previous poll
	loaded   [32]byte // digest of the files last loaded
	lastErrs string   // errors of the last load, "" if it was clean
	ready    bool
}

func newFilesSource(dir string, td spiffeid.TrustDomain, want []spiffeid.ID, interval time.Duration, log *slog.Logger, now func() time.Time) (*filesSource, error) {
	s := &filesSource{store: newStore(td, want, now), dir: dir, interval: interval, log: log}
	files := s.read()
	snap, errs, _ := s.load(s.Snapshot(), files)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	s.seen, s.loaded = files.digest(), files.digest()
	s.publish(snap)
	s.ready = s.Ready()
	for _, c := range snap.Certificates() {
		log.Info("identity: loaded certificate", "kind", c.Kind, "identity", c.Identity, "serial", c.Serial, "notAfter", c.NotAfter)
	}
	return s, nil
}

// Run polls the files until ctx is done.
func (s *filesSource) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.poll()
		}
	}
}

// poll reloads the files once they have changed and then stayed the same for one interval, so that a writer
// caught between its two files is not reported. A load that failed is retried on every poll (a certificate that
// is not valid yet becomes valid with time); its errors are logged when they change.
func (s *filesSource) poll() {
	files := s.read()
	d := files.digest()
	settled := d == s.seen
	s.seen = d
	if settled && (d != s.loaded || s.lastErrs != "") {
		s.loaded = d
		s.reload(files)
	}
	s.reportReadiness()
}

func (s *filesSource) reload(files fileContents) {
	prev := s.Snapshot()
	next, errs, changed := s.load(prev, files)
	text := errors.Join(errs...)
	switch {
	case text != nil && text.Error() != s.lastErrs:
		for _, err := range errs {
			s.log.Error("identity: kept the previous certificate", "err", err)
		}
		s.lastErrs = text.Error()
	case text == nil:
		s.lastErrs = ""
	}
	if !changed {
		return
	}
	s.publish(next)
	for id, h := range next.svids {
		if old, ok := prev.svids[id]; !ok || old != h {
			leaf := h.svid.Certificates[0]
			s.log.Info("identity: rotated certificate", "identity", id.String(),
				"serial", leaf.SerialNumber.Text(16), "notAfter", leaf.NotAfter)
		}
	}
	if prev.bundles != next.bundles {
		s.log.Info("identity: reloaded trust bundle", "file", BundlePath(s.dir))
	}
}

// reportReadiness logs when the source stops or starts being ready, e.g. when a certificate expires.
func (s *filesSource) reportReadiness() {
	ready := s.Ready()
	if ready == s.ready {
		return
	}
	s.ready = ready
	if ready {
		s.log.Info("identity: every local identity has a valid certificate")
		return
	}
	s.log.Error("identity: not ready: certificates missing or expired", "identities", fmt.Sprint(s.missing()))
}

// fileContents is one reading of every file the source needs.
type fileContents struct {
	bundle    []byte
	bundleErr error
	pairs     map[spiffeid.ID]filePair
}

type filePair struct {
	chain, key       []byte
	chainErr, keyErr error
}

func (s *filesSource) read() fileContents {
	fc := fileContents{pairs: make(map[spiffeid.ID]filePair, len(s.want))}
	fc.bundle, fc.bundleErr = os.ReadFile(BundlePath(s.dir))
	for _, id := range s.want {
		ns, sa, _ := ParseIstioID(id)
		var p filePair
		p.chain, p.chainErr = os.ReadFile(ChainPath(s.dir, ns, sa))
		p.key, p.keyErr = os.ReadFile(KeyPath(s.dir, ns, sa))
		fc.pairs[id] = p
	}
	return fc
}

// digest identifies the contents, including which files could not be read.
func (fc fileContents) digest() [32]byte {
	h := sha256.New()
	put := func(b []byte, err error) {
		if err != nil {
			b = []byte("error: " + err.Error())
		}
		binary.Write(h, binary.BigEndian, uint64(len(b)))
		h.Write(b)
	}
	put(fc.bundle, fc.bundleErr)
	ids := make([]spiffeid.ID, 0, len(fc.pairs))
	for id := range fc.pairs {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b spiffeid.ID) int { return cmp.Compare(a.String(), b.String()) })
	for _, id := range ids {
		p := fc.pairs[id]
		put([]byte(id.String()), nil)
		put(p.chain, p.chainErr)
		put(p.key, p.keyErr)
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// load builds the next Snapshot from prev and the files. Each part that fails to load keeps its previous value
// and yields an error naming the file and identity. changed reports whether anything differs from prev.
func (s *filesSource) load(prev *Snapshot, fc fileContents) (next *Snapshot, errs []error, changed bool) {
	now := s.now()
	next = &Snapshot{svids: make(map[spiffeid.ID]*heldSVID, len(s.want)), bundles: prev.bundles}
	bundle, err := s.loadBundle(fc, now)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("identity: load trust bundle %s: %w", BundlePath(s.dir), err))
	case !prev.hasBundle(s.td) || !bundleOf(prev, s.td).Equal(bundle):
		next.bundles = x509bundle.NewSet(bundle)
		changed = true
	}
	for _, id := range s.want {
		old, hadOld := prev.svids[id]
		svid, err := s.loadPair(id, fc.pairs[id], next, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("identity: load %s: %w", id, err))
		}
		if next.hold(id, svid, err, old, hadOld) {
			changed = true
		}
	}
	return next, errs, changed
}

func (s *filesSource) loadBundle(fc fileContents, now time.Time) (*x509bundle.Bundle, error) {
	if fc.bundleErr != nil {
		return nil, fc.bundleErr
	}
	roots, err := parseCertificates(fc.bundle)
	if err != nil {
		return nil, err
	}
	return newBundle(s.td, roots, now)
}

func (s *filesSource) loadPair(id spiffeid.ID, p filePair, bundles x509bundle.Source, now time.Time) (*x509svid.SVID, error) {
	ns, sa, _ := ParseIstioID(id)
	chainPath, keyPath := ChainPath(s.dir, ns, sa), KeyPath(s.dir, ns, sa)
	if p.chainErr != nil {
		return nil, p.chainErr
	}
	if p.keyErr != nil {
		return nil, p.keyErr
	}
	certs, err := parseCertificates(p.chain)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", chainPath, err)
	}
	key, err := parsePrivateKey(p.key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	svid, err := newSVID(id, certs, key, bundles, now)
	if err != nil {
		return nil, fmt.Errorf("%s with %s: %w", chainPath, keyPath, err)
	}
	return svid, nil
}

func bundleOf(s *Snapshot, td spiffeid.TrustDomain) *x509bundle.Bundle {
	b, _ := s.bundles.Get(td)
	return b
}

// sameChain reports whether two SVIDs carry the same certificates (and so, once validated, the same key).
func sameChain(a, b *x509svid.SVID) bool {
	return slices.EqualFunc(a.Certificates, b.Certificates, func(x, y *x509.Certificate) bool { return x.Equal(y) })
}
