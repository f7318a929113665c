package discovery

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ambient-agent/ambient-agent/agent/internal/pbwire"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// Proofs (docs/gossip.md, "Trust"). A record claims workloads, services and a waypoint; gossip's shared key says
// only that its publisher is a member. So every identity a record claims signs the record: the publisher shows it
// holds the key of each workload and waypoint it describes, with the certificate chain to the trust bundle. A
// receiver uses a record only when every claim in it is signed by its own identity. The signature covers the whole
// record before the proofs (node name and version included, so it cannot be moved to another node or replayed as a
// newer record) and an expiry: a record whose publisher stopped signing it stops counting within ProofLifetime.
// IP SANs in a leaf prove the addresses its workloads may claim: when present, a claim of another address is refused,
// and the addresses they prove outrank unproven claims (state/contest.go).

// Trust proves this node's claims and checks its peers'.
type Trust struct {
	// Bundles returns the trust bundles that proofs must chain to; read at every check, so a rotated bundle
	// applies at once (call Reverify to re-check the records already held).
	Bundles func() x509bundle.Source
	// SVID returns the current SVID of a local identity; false when it is not held (yet).
	SVID func(spiffeid.ID) (*x509svid.SVID, bool)
	// AcceptUnsigned takes records that carry no proof at all, from agents that do not sign (a rolling upgrade);
	// their claims count as unproven gossip claims (state.OriginUnsigned). A record with proofs is always checked whole.
	AcceptUnsigned bool
}

// Proof is one identity's signature over a record.
type Proof struct {
	Chain     [][]byte // DER certificates, leaf first, without the root
	NotAfter  int64    // unix seconds: the signature counts until then
	Signature []byte
}

// Proof timings and bounds.
const (
	ProofLifetime = time.Hour // how long a signature counts
	resignAfter   = ProofLifetime / 2
	maxClockSkew  = 5 * time.Minute
	maxProofs     = 32 // identities one record may prove
	maxChainCerts = 4
	maxCertBytes  = 4096
	maxSigBytes   = 1024

	proofContext = "ambient-agent gossip record proof v1\x00"
)

// Field numbers of a proof; a record's proofs come after all its other fields.
const (
	recProof                                  protowire.Number = 8
	proofChain, proofNotAfter, proofSignature protowire.Number = 1, 2, 3
)

// Why a record's proofs were refused: more of the drop vocabulary (wire.go).
const (
	reasonUnsigned    = "unsigned"       // no proof, and unsigned records are not accepted
	reasonBadProof    = "bad_proof"      // a chain that does not verify to the bundle, or a wrong signature
	reasonExpired     = "expired"        // a signature or certificate past its time
	reasonUnproven    = "unproven_claim" // a workload or waypoint whose identity signed nothing
	reasonAddressSANs = "address_not_in_certificate"
)

// proven is what a record's proofs establish.
type proven struct {
	signed  bool
	ids     map[spiffeid.ID][]netip.Addr // identity -> its leaf's IP SANs (none: addresses unproven)
	expires time.Time
}

// addressesProven reports whether id's certificate names every one of addrs.
func (p proven) addressesProven(id spiffeid.ID, addrs []netip.Addr) bool {
	sans := p.ids[id]
	if len(sans) == 0 {
		return false
	}
	for _, a := range addrs {
		if !slices.Contains(sans, a.Unmap()) {
			return false
		}
	}
	return true
}

// proofMessage is what an identity signs: the record's bytes before the proofs, and the expiry.
func proofMessage(signed []byte, notAfter int64) []byte {
	sum := sha256.Sum256(signed)
	m := append([]byte(proofContext), sum[:]...)
	return binary.BigEndian.AppendUint64(m, uint64(notAfter))
}

// signRecord appends to the encoded record body one proof per identity, signed with svids.
func signRecord(body []byte, svids []*x509svid.SVID, now time.Time) ([]byte, time.Time, error) {
	expires := now.Add(ProofLifetime)
	for _, s := range svids {
		expires = minTime(expires, s.Certificates[0].NotAfter)
	}
	notAfter := expires.Unix()
	msg := proofMessage(body, notAfter)
	out := body
	for _, s := range svids {
		sig, err := sign(s.PrivateKey, msg)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("signing as %s: %w", s.ID, err)
		}
		p := pbwire.AppendNonZero(nil, proofNotAfter, uint64(notAfter))
		for _, c := range s.Certificates {
			p = pbwire.AppendBytes(p, proofChain, c.Raw)
		}
		p = pbwire.AppendBytes(p, proofSignature, sig)
		out = pbwire.AppendMessage(out, recProof, p)
	}
	return out, time.Unix(notAfter, 0), nil
}

func sign(key crypto.Signer, msg []byte) ([]byte, error) {
	if _, ok := key.(ed25519.PrivateKey); ok {
		return key.Sign(rand.Reader, msg, crypto.Hash(0))
	}
	sum := sha256.Sum256(msg)
	return key.Sign(rand.Reader, sum[:], crypto.SHA256)
}

// signatureAlgorithm is how a leaf's key signs proofs (sign above).
func signatureAlgorithm(leaf *x509.Certificate) (x509.SignatureAlgorithm, error) {
	switch leaf.PublicKey.(type) {
	case *ecdsa.PublicKey:
		return x509.ECDSAWithSHA256, nil
	case *rsa.PublicKey:
		return x509.SHA256WithRSA, nil
	case ed25519.PublicKey:
		return x509.PureEd25519, nil
	}
	return 0, fmt.Errorf("a %T key cannot sign proofs", leaf.PublicKey)
}

// verifyProofs checks a decoded record's proofs against the bundles at time now, and that every claim is
// proven. signed is the record's bytes before its first proof.
func verifyProofs(r *Record, signed []byte, trust *Trust, now time.Time) (proven, error) {
	if len(r.Proofs) == 0 {
		if len(r.Workloads) == 0 && len(r.Services) == 0 && r.Waypoint == nil && r.Gateway == nil {
			return proven{signed: true, expires: time.Unix(1<<40, 0)}, nil // claims nothing: nothing to prove
		}
		if trust.AcceptUnsigned {
			return proven{}, nil
		}
		return proven{}, drop(reasonUnsigned, "the record carries no proof of its claims")
	}
	if err := proofsMatchClaims(r); err != nil {
		return proven{}, err
	}
	p := proven{signed: true, ids: map[spiffeid.ID][]netip.Addr{}, expires: now.Add(ProofLifetime + maxClockSkew)}
	bundles := trust.Bundles()
	for i, pr := range r.Proofs {
		id, chain, err := verifyProof(pr, signed, bundles, now)
		if err != nil {
			return proven{}, fmt.Errorf("proof %d: %w", i, err)
		}
		p.ids[id] = ipSANs(chain[0])
		p.expires = minTime(p.expires, time.Unix(pr.NotAfter, 0))
		for _, c := range chain { // the leaf, its intermediates and the root: the proof holds while all do
			p.expires = minTime(p.expires, c.NotAfter)
		}
	}
	return p, checkClaims(r, p)
}

// proofsMatchClaims refuses, before any signature is checked, proofs that are not one per identity the record
// claims: a duplicate, or an identity it claims nothing for, would only cost receivers work.
func proofsMatchClaims(r *Record) error {
	claimed := map[spiffeid.ID]bool{}
	for _, w := range r.Workloads {
		if id, err := identityOf(w.TrustDomain, w.Namespace, w.ServiceAccount); err == nil {
			claimed[id] = true
		}
	}
	if w := r.Waypoint; w != nil {
		if id, err := identityOf(w.TrustDomain, w.Namespace, w.ServiceAccount); err == nil {
			claimed[id] = true
		}
	}
	if g := r.Gateway; g != nil {
		if id, err := identityOf(g.TrustDomain, g.Namespace, g.ServiceAccount); err == nil {
			claimed[id] = true
		}
	}
	seen := map[spiffeid.ID]bool{}
	for i, pr := range r.Proofs {
		leaf, err := x509.ParseCertificate(pr.Chain[0])
		if err != nil {
			return drop(reasonBadProof, "proof %d: certificate: %v", i, err)
		}
		id, err := x509svid.IDFromCert(leaf)
		switch {
		case err != nil:
			return drop(reasonBadProof, "proof %d: %v", i, err)
		case seen[id]:
			return drop(reasonBadProof, "proof %d: a second proof of %s", i, id)
		case !claimed[id]:
			return drop(reasonBadProof, "proof %d: %s, an identity the record claims nothing for", i, id)
		}
		seen[id] = true
	}
	return nil
}

func verifyProof(pr Proof, signed []byte, bundles x509bundle.Source, now time.Time) (spiffeid.ID, []*x509.Certificate, error) {
	id, chains, err := x509svid.ParseAndVerify(pr.Chain, bundles, x509svid.WithTime(now))
	if err != nil {
		reason := reasonBadProof
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			reason = reasonExpired
		}
		return spiffeid.ID{}, nil, drop(reason, "certificate chain: %v", err)
	}
	switch na := time.Unix(pr.NotAfter, 0); {
	case !na.After(now):
		return spiffeid.ID{}, nil, drop(reasonExpired, "%s signed until %s", id, na.UTC().Format(time.RFC3339))
	case na.After(now.Add(ProofLifetime + maxClockSkew)):
		return spiffeid.ID{}, nil, drop(reasonBadProof, "%s signed until %s, beyond the %s a signature may count", id,
			na.UTC().Format(time.RFC3339), ProofLifetime)
	}
	leaf := chains[0][0]
	algo, err := signatureAlgorithm(leaf)
	if err == nil {
		err = leaf.CheckSignature(algo, proofMessage(signed, pr.NotAfter), pr.Signature)
	}
	if err != nil {
		return spiffeid.ID{}, nil, drop(reasonBadProof, "signature of %s: %v", id, err)
	}
	return id, chains[0], nil
}

// checkClaims refuses a record with a workload or waypoint whose identity signed nothing, or whose addresses
// its certificate's IP SANs do not name.
func checkClaims(r *Record, p proven) error {
	for _, w := range r.Workloads {
		if err := p.check(w.TrustDomain, w.Namespace, w.ServiceAccount, w.Addresses); err != nil {
			return fmt.Errorf("workload %s/%s: %w", w.Namespace, w.Name, err)
		}
	}
	if w := r.Waypoint; w != nil {
		if err := p.check(w.TrustDomain, w.Namespace, w.ServiceAccount, w.Addresses); err != nil {
			return fmt.Errorf("waypoint: %w", err)
		}
	}
	if g := r.Gateway; g != nil {
		if err := p.check(g.TrustDomain, g.Namespace, g.ServiceAccount, g.Addresses); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}
	return nil
}

func (p proven) check(td, ns, sa string, addrs []netip.Addr) error {
	id, err := identityOf(td, ns, sa)
	if err != nil {
		return drop(reasonInvalid, "identity: %v", err)
	}
	sans, ok := p.ids[id]
	switch {
	case !ok:
		return drop(reasonUnproven, "%s signed nothing in the record", id)
	case len(sans) > 0 && !p.addressesProven(id, addrs):
		return drop(reasonAddressSANs, "addresses %v are not all in %s's certificate (%v)", addrs, id, sans)
	}
	return nil
}

// claimProven reports whether the identity's certificate names every one of addrs.
func (p proven) claimProven(td, ns, sa string, addrs []netip.Addr) bool {
	id, err := identityOf(td, ns, sa)
	return err == nil && p.addressesProven(id, addrs)
}

// identityOf is the Istio identity spiffe://td/ns/NS/sa/SA.
func identityOf(td, ns, sa string) (spiffeid.ID, error) {
	t, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromSegments(t, "ns", ns, "sa", sa)
}

// ipSANs are a certificate's IP SANs.
func ipSANs(c *x509.Certificate) []netip.Addr {
	var out []netip.Addr
	for _, ip := range c.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// origin is the state origin of a record's claims.
func (p proven) origin() state.Origin {
	if p.signed {
		return state.OriginGossip
	}
	return state.OriginUnsigned
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// decodeProof reads one proof field.
func decodeProof(f pbwire.Field) (Proof, error) {
	var p Proof
	err := eachIn(f, func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case proofChain:
			var c []byte
			if c, err = f.Bytes(); err == nil {
				if len(p.Chain) == maxChainCerts || len(c) > maxCertBytes {
					return drop(reasonTooLarge, "a chain of more than %d certificates or a certificate over %d bytes", maxChainCerts, maxCertBytes)
				}
				p.Chain = append(p.Chain, c)
			}
		case proofNotAfter:
			var v uint64
			v, err = f.Uint(1 << 40)
			p.NotAfter = int64(v)
		case proofSignature:
			if p.Signature, err = f.Bytes(); err == nil && len(p.Signature) > maxSigBytes {
				return drop(reasonTooLarge, "a signature of %d bytes", len(p.Signature))
			}
		}
		return err
	})
	if err == nil && (len(p.Chain) == 0 || len(p.Signature) == 0) {
		err = drop(reasonBadProof, "a proof without a certificate or a signature")
	}
	return p, err
}
