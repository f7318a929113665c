package xds

import (
	"fmt"
	"maps"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
)

// store holds the resources received so far, decoded, with the version istiod gave each. It is owned by the
// Run goroutine and survives reconnections: on a new stream the versions go back to istiod as
// initial_resource_versions, and istiod sends only what changed since (and removes what is gone).
type store struct {
	addresses map[string]*address                 // by resource name: a workload uid, or "namespace/hostname"
	policies  map[string]*policy.XDSAuthorization // by resource name: "namespace/name"
	versions  map[string]map[string]string        // type URL -> resource name -> version
	// policyGen counts the responses that changed the policies.
	policyGen uint64
	// touched are the workload resources replaced since the view was last built, each with its version then;
	// reshaped says something else of the addresses changed (a service, a removal, a new resource).
	touched  map[string]*address
	reshaped bool
}

func newStore() *store {
	return &store{
		addresses: map[string]*address{},
		policies:  map[string]*policy.XDSAuthorization{},
		versions:  map[string]map[string]string{AddressType: {}, AuthorizationType: {}},
	}
}

// rejection is one resource the client refused, and why.
type rejection struct{ name, reason string }

// Bounds of a NACK's error_detail. Names and reasons come from istiod and can be of any size; quoted in full
// they could make the NACK larger than istiod accepts, and the stream would fail instead of reporting them.
const (
	maxRejectionsListed = 10
	maxQuoted           = 256  // bytes of one name or reason
	maxDetail           = 4096 // bytes of the whole message
	moreRoom            = 32   // kept for "; and N more"
)

// rejectionDetail is the error_detail message of a NACK: "name: reason; name: reason", as ztunnel writes it,
// valid UTF-8 and at most maxDetail bytes.
func rejectionDetail(rs []rejection) string {
	var b strings.Builder
	for i, r := range rs {
		part := clip(r.name, maxQuoted) + ": " + clip(r.reason, maxQuoted)
		if i == maxRejectionsListed || b.Len()+len("; ")+len(part)+moreRoom > maxDetail {
			if i > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "and %d more", len(rs)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(part)
	}
	return b.String()
}

// clip returns s as valid UTF-8; one longer than n bytes is cut on a character boundary at n bytes at most
// and followed by a marker that gives its full length.
func clip(s string, n int) string {
	total := len(s)
	if len(s) > n+utf8.UTFMax {
		s = s[:n+utf8.UTFMax] // enough to find a boundary; the rest is never read
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if total <= n && len(s) <= n {
		return s
	}
	cut := min(n, len(s))
	for cut > 0 && cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "...(cut, " + strconv.Itoa(total) + " bytes)"
}

// apply applies one response. Each resource is taken or refused on its own, as in ztunnel: a refused
// resource keeps its previous version (if any) in the view, and its version is not recorded, so that a
// reconnection asks for it again. It reports whether anything changed and what was refused.
func (s *store) apply(resp *deltaResponse) (changed bool, rejected []rejection) {
	versions, known := s.versions[resp.typeURL]
	if !known {
		return false, []rejection{{name: resp.typeURL, reason: "a type this client did not subscribe to"}}
	}
	for _, r := range resp.resources {
		if err := s.put(resp.typeURL, r); err != nil {
			rejected = append(rejected, rejection{name: r.name, reason: err.Error()})
			continue
		}
		versions[r.name] = r.version
		changed = true
	}
	for _, name := range resp.removed {
		_, had := versions[name]
		delete(versions, name)
		switch resp.typeURL {
		case AddressType:
			s.reshaped = true
			_, had2 := s.addresses[name]
			had = had || had2
			delete(s.addresses, name)
		case AuthorizationType:
			_, had2 := s.policies[name]
			had = had || had2
			delete(s.policies, name)
		}
		changed = changed || had
	}
	if changed && resp.typeURL == AuthorizationType {
		s.policyGen++
	}
	return changed, rejected
}

// put decodes one resource and stores it under its name.
func (s *store) put(typeURL string, r resource) error {
	switch {
	case r.name == "":
		return fmt.Errorf("a resource without a name")
	case !r.hasPayload:
		return fmt.Errorf("no payload")
	case r.payloadType != typeURL:
		return fmt.Errorf("payload of type %q in a %q response", r.payloadType, typeURL)
	}
	switch typeURL {
	case AddressType:
		a, err := decodeAddress(r.payload)
		if err != nil {
			return err
		}
		s.touch(r.name, a)
		s.addresses[r.name] = a
	case AuthorizationType:
		p, err := decodeAuthorization(r.payload)
		if err != nil {
			return err
		}
		s.policies[r.name] = p
	}
	return nil
}

// initialVersions is what a new stream sends as initial_resource_versions for typeURL.
func (s *store) initialVersions(typeURL string) map[string]string {
	v := s.versions[typeURL]
	if len(v) == 0 {
		return nil
	}
	return maps.Clone(v)
}

// touch notes that address resource name is replaced by a, for the next view (patch.go).
func (s *store) touch(name string, a *address) {
	old := s.addresses[name]
	if old == nil || old.Workload == nil || a.Workload == nil {
		s.reshaped = true
		return
	}
	if s.touched == nil {
		s.touched = map[string]*address{}
	}
	if _, ok := s.touched[name]; !ok {
		s.touched[name] = old
	}
}
