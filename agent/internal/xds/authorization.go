package xds

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ambient-agent/ambient-agent/agent/internal/pbwire"
	"github.com/ambient-agent/ambient-agent/agent/internal/policy"
)

// Field numbers of istio.security (authorization.proto). Istio's copy names the levels Group > Rules > Match,
// ztunnel's Rule > Clause > Match; the numbers are the same.
const (
	// Authorization
	authzName, authzNamespace, authzScope, authzAction, authzGroups, authzDryRun = 1, 2, 3, 4, 5, 6
	// 7 extensions: skipped.

	// Group (ztunnel: Rule): repeated Rules rules = 1
	groupRules = 1
	// Rules (ztunnel: Clause): repeated Match matches = 2 (1 was match_behavior, never used)
	rulesMatches = 2

	// Match
	mNamespaces, mNotNamespaces, mPrincipals, mNotPrincipals       = 1, 2, 3, 4
	mSourceIPs, mNotSourceIPs, mDestinationIPs, mNotDestinationIPs = 5, 6, 7, 8
	mDestinationPorts, mNotDestinationPorts                        = 9, 10
	mServiceAccounts, mNotServiceAccounts                          = 11, 12
	// 13 extensions: skipped.

	// Address (a CIDR)
	cidrAddress, cidrLength = 1, 2
	// ServiceAccountMatch
	saNamespace, saServiceAccount = 1, 2
	// StringMatch: oneof match_type { string exact = 1; string prefix = 2; string suffix = 3; Empty presence = 4; }
	smExact, smPrefix, smSuffix, smPresence = 1, 2, 3, 4
)

// decodeAuthorization reads one istio.security.Authorization resource into the policy package's plain form.
// It returns an error, never panics. It rejects what ztunnel rejects (src/rbac.rs, TryFrom<XdsRbac>): bad wire
// data and an unknown scope or action. What ztunnel leaves out of an accepted policy (a string match with no
// match type, an address that is not 4 or 16 bytes or has too long a prefix) is passed on as an empty string
// match or an invalid prefix, which policy.CompileXDS leaves out with a warning.
func decodeAuthorization(b []byte) (*policy.XDSAuthorization, error) {
	a := &policy.XDSAuthorization{}
	err := pbwire.Each(b, func(f pbwire.Field) error {
		var err error
		var v uint64
		switch f.Num {
		case authzName:
			a.Name, err = f.Str()
		case authzNamespace:
			a.Namespace, err = f.Str()
		case authzScope:
			v, err = enum(f, "scope", uint64(policy.XDSScopeWorkloadSelector))
			a.Scope = policy.XDSScope(v)
		case authzAction:
			v, err = enum(f, "action", uint64(policy.XDSActionDeny))
			a.Action = policy.XDSAction(v)
		case authzDryRun:
			a.DryRun, err = f.Bool()
		case authzGroups:
			var g policy.XDSGroup
			if g, err = decodeGroup(f); err == nil {
				a.Groups = append(a.Groups, g)
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("authorization: %w", err)
	}
	if a.Name == "" || a.Namespace == "" {
		return nil, errors.New("authorization: no name or namespace")
	}
	return a, nil
}

func decodeGroup(f pbwire.Field) (policy.XDSGroup, error) {
	var g policy.XDSGroup
	err := f.Each(func(f pbwire.Field) error {
		if f.Num != groupRules {
			return nil
		}
		rb, err := f.Bytes()
		if err != nil {
			return err
		}
		var rs policy.XDSRules
		err = pbwire.Each(rb, func(f pbwire.Field) error {
			if f.Num != rulesMatches {
				return nil
			}
			m, err := decodeMatch(f)
			if err == nil {
				rs.Matches = append(rs.Matches, m)
			}
			return err
		})
		g.Rules = append(g.Rules, rs)
		return err
	})
	if err != nil {
		return g, fmt.Errorf("group: %w", err)
	}
	return g, nil
}

func decodeMatch(f pbwire.Field) (policy.XDSMatch, error) {
	var m policy.XDSMatch
	err := f.Each(func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case mNamespaces:
			m.Namespaces, err = appendStringMatch(m.Namespaces, f)
		case mNotNamespaces:
			m.NotNamespaces, err = appendStringMatch(m.NotNamespaces, f)
		case mPrincipals:
			m.Principals, err = appendStringMatch(m.Principals, f)
		case mNotPrincipals:
			m.NotPrincipals, err = appendStringMatch(m.NotPrincipals, f)
		case mServiceAccounts:
			m.ServiceAccounts, err = appendServiceAccount(m.ServiceAccounts, f)
		case mNotServiceAccounts:
			m.NotServiceAccounts, err = appendServiceAccount(m.NotServiceAccounts, f)
		case mSourceIPs:
			m.SourceIPs, err = appendCIDR(m.SourceIPs, f)
		case mNotSourceIPs:
			m.NotSourceIPs, err = appendCIDR(m.NotSourceIPs, f)
		case mDestinationIPs:
			m.DestinationIPs, err = appendCIDR(m.DestinationIPs, f)
		case mNotDestinationIPs:
			m.NotDestinationIPs, err = appendCIDR(m.NotDestinationIPs, f)
		case mDestinationPorts:
			m.DestinationPorts, err = appendPorts(m.DestinationPorts, f)
		case mNotDestinationPorts:
			m.NotDestinationPorts, err = appendPorts(m.NotDestinationPorts, f)
		}
		return err
	})
	if err != nil {
		return m, fmt.Errorf("match: %w", err)
	}
	return m, nil
}

// appendStringMatch reads a StringMatch; its oneof keeps the last value on the wire.
func appendStringMatch(dst []policy.XDSStringMatch, f pbwire.Field) ([]policy.XDSStringMatch, error) {
	var s policy.XDSStringMatch
	err := f.Each(func(f pbwire.Field) error {
		var err error
		var v string
		switch f.Num {
		case smExact:
			v, err = f.Str()
			s = policy.XDSStringMatch{Exact: v}
		case smPrefix:
			v, err = f.Str()
			s = policy.XDSStringMatch{Prefix: v}
		case smSuffix:
			v, err = f.Str()
			s = policy.XDSStringMatch{Suffix: v}
		case smPresence:
			_, err = f.Bytes()
			s = policy.XDSStringMatch{Presence: true}
		}
		return err
	})
	if err != nil {
		return dst, fmt.Errorf("string match: %w", err)
	}
	return append(dst, s), nil
}

func appendServiceAccount(dst []policy.XDSServiceAccountMatch, f pbwire.Field) ([]policy.XDSServiceAccountMatch, error) {
	var s policy.XDSServiceAccountMatch
	err := f.Each(func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case saNamespace:
			s.Namespace, err = f.Str()
		case saServiceAccount:
			s.ServiceAccount, err = f.Str()
		}
		return err
	})
	if err != nil {
		return dst, fmt.Errorf("service account match: %w", err)
	}
	return append(dst, s), nil
}

// appendCIDR reads an Address (bytes and prefix length). An address that is not 4 or 16 bytes, or a length
// longer than the address, becomes an invalid netip.Prefix: ztunnel leaves such a value out of the match,
// and so does policy.CompileXDS.
func appendCIDR(dst []netip.Prefix, f pbwire.Field) ([]netip.Prefix, error) {
	var raw []byte
	var length uint64
	err := f.Each(func(f pbwire.Field) error {
		var err error
		switch f.Num {
		case cidrAddress:
			raw, err = f.Bytes()
		case cidrLength:
			length, err = f.Uint(1<<32 - 1)
		}
		return err
	})
	if err != nil {
		return dst, fmt.Errorf("address: %w", err)
	}
	addr, ok := netip.AddrFromSlice(raw)
	if !ok || length > uint64(addr.BitLen()) {
		return append(dst, netip.Prefix{}), nil
	}
	if addr.Is4In6() && length >= 96 { // the agent compares unmapped addresses
		addr, length = addr.Unmap(), length-96
	}
	return append(dst, netip.PrefixFrom(addr, int(length))), nil
}

// appendPorts reads destination ports: uint32 on the wire, of which ztunnel keeps the low 16 bits
// (istiod never sends more than 65535).
func appendPorts(dst []uint16, f pbwire.Field) ([]uint16, error) {
	ps, err := uints(f, nil)
	if err != nil {
		return dst, err
	}
	for _, p := range ps {
		dst = append(dst, uint16(p))
	}
	return dst, nil
}
