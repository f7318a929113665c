// Package ca tests the agent's istio identity source against istiod's own CA code, run in-process: Istio's CA
// (security/pkg/pki/ca), its gRPC certificate service (security/pkg/server/ca) and its JWT authenticator
// (security/pkg/server/ca/authenticate), checking tokens against a test JWKS server the way an istiod outside
// Kubernetes checks a cluster's service-account tokens.
//
// It is its own package, and so its own test binary, so that it builds apart from the HBONE interop test: the
// first build of Istio's CA code takes minutes (spec/environment.md).
package ca
