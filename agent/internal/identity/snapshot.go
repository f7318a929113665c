package identity

import (
	"crypto/tls"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Snapshot is one immutable view of what a Source holds: the SVIDs of the wanted local identities and the trust
// bundles. A Source replaces its Snapshot as a whole; nothing in a Snapshot changes after it is published.
// A Snapshot is an x509bundle.Source, so it can verify peers with go-spiffe directly.
type Snapshot struct {
	svids   map[spiffeid.ID]*heldSVID
	bundles *x509bundle.Set
}

// heldSVID is an SVID with the tls.Certificate built from it once, not on every handshake.
type heldSVID struct {
	svid *x509svid.SVID
	cert *tls.Certificate
}

// hold puts the SVID of id in s: the one held before (old, when hadOld) if the
// new one failed to load (err) or is the same chain; else the new one, and it
// reports that it changed.
func (s *Snapshot) hold(id spiffeid.ID, svid *x509svid.SVID, err error, old *heldSVID, hadOld bool) bool {
	switch {
	case err != nil:
		if hadOld {
			s.svids[id] = old
		}
		return false
	case hadOld && sameChain(old.svid, svid):
		s.svids[id] = old
		return false
	}
	s.svids[id] = newHeldSVID(svid)
	return true
}

func newHeldSVID(s *x509svid.SVID) *heldSVID {
	cert := &tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
	for _, c := range s.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return &heldSVID{svid: s, cert: cert}
}

func emptySnapshot() *Snapshot {
	return &Snapshot{svids: map[spiffeid.ID]*heldSVID{}, bundles: x509bundle.NewSet()}
}

// SVID returns the current SVID of a local identity.
func (s *Snapshot) SVID(id spiffeid.ID) (*x509svid.SVID, bool) {
	h, ok := s.svids[id]
	if !ok {
		return nil, false
	}
	return h.svid, true
}

// Certificate returns the current certificate chain and key of a local identity, ready for a TLS handshake.
// Callers must not modify it.
func (s *Snapshot) Certificate(id spiffeid.ID) (*tls.Certificate, bool) {
	h, ok := s.svids[id]
	if !ok {
		return nil, false
	}
	return h.cert, true
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s *Snapshot) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, ok := s.bundles.Get(td)
	if !ok {
		return nil, fmt.Errorf("identity: no trust bundle for trust domain %q", td)
	}
	return b, nil
}

// hasBundle reports whether the snapshot holds a non-empty bundle for td.
func (s *Snapshot) hasBundle(td spiffeid.TrustDomain) bool {
	b, ok := s.bundles.Get(td)
	return ok && !b.Empty()
}

// CertInfo describes one held certificate, for /config_dump and metrics. It never carries key material.
type CertInfo struct {
	// Kind is "workload" for a local identity's leaf and "root" for a trust bundle certificate.
	Kind string `json:"kind"`
	// Identity is the SPIFFE ID of a workload certificate, or the trust domain of a root.
	Identity  string    `json:"identity"`
	Serial    string    `json:"serial"`
	Subject   string    `json:"subject,omitempty"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
}

// Certificate kinds of CertInfo.
const (
	KindWorkload = "workload"
	KindRoot     = "root"
)

// Certificates lists the held workload leaves and bundle roots, sorted by kind and identity.
func (s *Snapshot) Certificates() []CertInfo {
	var out []CertInfo
	for id, h := range s.svids {
		leaf := h.svid.Certificates[0]
		out = append(out, CertInfo{
			Kind: KindWorkload, Identity: id.String(), Serial: leaf.SerialNumber.Text(16),
			NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
		})
	}
	for _, b := range s.bundles.Bundles() {
		for _, r := range b.X509Authorities() {
			out = append(out, CertInfo{
				Kind: KindRoot, Identity: b.TrustDomain().Name(), Serial: r.SerialNumber.Text(16),
				Subject: r.Subject.String(), NotBefore: r.NotBefore, NotAfter: r.NotAfter,
			})
		}
	}
	slices.SortFunc(out, func(a, b CertInfo) int {
		if a.Kind != b.Kind {
			if a.Kind == KindWorkload {
				return -1
			}
			return 1
		}
		if a.Identity != b.Identity {
			if a.Identity < b.Identity {
				return -1
			}
			return 1
		}
		return a.NotAfter.Compare(b.NotAfter)
	})
	return out
}
