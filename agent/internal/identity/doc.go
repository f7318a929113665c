// Package identity owns the agent's SPIFFE identities: the X.509 SVIDs of the local workloads, the trust bundle,
// their rotation, and the TLS configurations HBONE uses with them (spec/identity.md, spec/hbone.md "TLS").
//
// A Source holds, for each wanted local identity, its current certificate and key, plus the trust bundle, as an
// immutable Snapshot that is swapped atomically when something changes. Three sources exist:
//
//   - files: PEM files in a fixed layout (see BundlePath, ChainPath, KeyPath), polled and reloaded when they
//     change. A file that is half written, unreadable or does not match its key never replaces a good one.
//   - spire: the SPIRE Workload API over its unix socket. The agent receives one SVID per registration entry
//     that selects it and keeps those of the wanted identities; SPIRE pushes rotations.
//   - istio: istiod's CA (gRPC IstioCertificateService, as a ztunnel uses it). For each identity the source
//     sends a CSR with a fresh key, authenticated by that identity's service-account token, and renews the
//     certificate at half its lifetime, retrying failures with backoff while the current one stays in use.
//
// How the composition root uses it:
//
//	src, err := identity.New(identity.Options{Source: "files", Dir: dir, TrustDomain: td,
//		Identities: ids, Logger: log})       // validates; files: loads once, refusing bad certificates
//	go src.Run(ctx)                        // watches files / streams from SPIRE / asks istiod until ctx is done
//	src.Ready()                            // every wanted identity has a valid certificate, and a bundle
//	<-src.Changed()                        // something changed (1-buffered, coalescing)
//	src.Certificates()                     // serials and validity for /config_dump; never keys
//	identity.ServerTLSConfig(src, localIdentityByAddr)   // HBONE server (port 15008)
//	identity.ClientTLSConfig(src, local, expected)       // HBONE client, one per (local, destination) pair
//
// Both TLS configurations read the current Snapshot on every handshake, so a rotated certificate is used by the
// next handshake while established connections keep running.
//
// identity imports no other agent package, only go-spiffe, gRPC (SPIRE's Workload API, istiod's CA), istiod's
// generated API (istio.io/api/security/v1alpha1) and the standard library. It must not import app, admin,
// proxy, hbone, state, policy or discovery: those depend on it.
package identity
