package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// The checks istiod's webhook applies to values, written as parsers so that conversion uses exactly what
// validation accepted.

// parseIPBlock reads "10.0.0.1" (a /32 or /128) or "10.0.0.0/8".
func parseIPBlock(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad CIDR range %q: %v", v, err)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("bad IP address %q", v)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parsePort reads a port number, 0 to 65535.
func parsePort(v string) (uint16, error) {
	p, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("bad port %q: must be a number from 0 to 65535", v)
	}
	return uint16(p), nil
}

// parseServiceAccount reads "namespace/name", or "name" for the policy's own namespace.
func parseServiceAccount(v, policyNamespace string) (ServiceAccountMatch, error) {
	if strings.Contains(v, "*") {
		return ServiceAccountMatch{}, fmt.Errorf("bad service account %q: wildcards are not supported", v)
	}
	ns, name, qualified := strings.Cut(v, "/")
	if !qualified {
		ns, name = policyNamespace, v
	}
	if ns == "" || name == "" || strings.Contains(name, "/") {
		return ServiceAccountMatch{}, fmt.Errorf("bad service account %q: want \"name\" or \"namespace/name\"", v)
	}
	return ServiceAccountMatch{Namespace: ns, ServiceAccount: name}, nil
}

// isL4Attribute: the `when` keys a node agent can evaluate; istiod keeps exactly these for ztunnel.
func isL4Attribute(key string) bool {
	switch key {
	case "source.ip", "source.namespace", "source.principal", "destination.ip", "destination.port":
		return true
	}
	return false
}

// checkAttribute accepts the `when` keys Istio knows (ValidateAttribute), L4 or not.
func checkAttribute(key string) error {
	if isL4Attribute(key) {
		return nil
	}
	switch key {
	case "remote.ip", "request.auth.principal", "request.auth.audiences", "request.auth.presenter", "connection.sni":
		return nil
	case "destination.namespace":
		return fmt.Errorf("attribute %s is replaced by metadata.namespace", key)
	case "destination.name", "destination.user":
		return fmt.Errorf("deprecated attribute %s: only supported in v1alpha1", key)
	}
	for _, prefix := range []string{"request.headers", "request.auth.claims", "experimental.envoy.filters."} {
		if strings.HasPrefix(key, prefix) {
			return checkMapKey(key)
		}
	}
	if strings.HasPrefix(key, "destination.labels") {
		return fmt.Errorf("attribute %s is replaced by the workload selector", key)
	}
	return fmt.Errorf("unknown attribute %q", key)
}

func checkMapKey(key string) error {
	open := strings.Index(key, "[")
	if strings.HasSuffix(key, "]") && open > 0 && open < len(key)-2 {
		return nil
	}
	return fmt.Errorf("bad key %q: should have the form a[b]", key)
}

func checkLabel(k, v string) error {
	switch {
	case k == "":
		return errors.New("empty label key")
	case strings.Contains(k, "*") || strings.Contains(v, "*"):
		return errors.New("wildcards are not supported in a selector")
	}
	return nil
}
