package xds

import (
	"fmt"
	"strings"

	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
)

// store holds the resources received so far, decoded, with the version istiod gave each. It is owned by the
// Run goroutine and survives reconnections: on a new stream the versions go back to istiod as
// initial_resource_versions, and istiod sends only what changed since (and removes what is gone).
type store struct {
	addresses map[string]*address                 // by resource name: a workload uid, or "namespace/hostname"
	policies  map[string]*policy.XDSAuthorization // by resource name: "namespace/name"
	versions  map[string]map[string]string        // type URL -> resource name -> version
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

func (r rejection) String() string { return r.name + ": " + r.reason }

// maxRejectionsListed bounds a NACK's error_detail.
const maxRejectionsListed = 10

// rejectionDetail is the error_detail message of a NACK: "name: reason; name: reason", as ztunnel writes it.
func rejectionDetail(rs []rejection) string {
	parts := make([]string, 0, min(len(rs), maxRejectionsListed)+1)
	for i, r := range rs {
		if i == maxRejectionsListed {
			parts = append(parts, fmt.Sprintf("and %d more", len(rs)-i))
			break
		}
		parts = append(parts, r.String())
	}
	return strings.Join(parts, "; ")
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
	out := make(map[string]string, len(v))
	for name, version := range v {
		out[name] = version
	}
	return out
}
