package identity

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Istio's defaults for a workload that does not name its namespace or service account.
const (
	DefaultNamespace      = "default"
	DefaultServiceAccount = "default"
)

// IstioID returns the Istio form of a workload identity, spiffe://<td>/ns/<ns>/sa/<sa>. An empty namespace or
// service account means Istio's default. It fails only for names that are not valid SPIFFE path segments.
func IstioID(td spiffeid.TrustDomain, ns, sa string) (spiffeid.ID, error) {
	if ns == "" {
		ns = DefaultNamespace
	}
	if sa == "" {
		sa = DefaultServiceAccount
	}
	id, err := spiffeid.FromSegments(td, "ns", ns, "sa", sa)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: namespace %q, service account %q: %w", ns, sa, err)
	}
	return id, nil
}

// ParseIstioID splits an identity of the Istio form into its namespace and service account. ok is false for any
// other form.
func ParseIstioID(id spiffeid.ID) (ns, sa string, ok bool) {
	parts := strings.Split(id.Path(), "/")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "ns" || parts[3] != "sa" || parts[2] == "" || parts[4] == "" {
		return "", "", false
	}
	return parts[2], parts[4], true
}
