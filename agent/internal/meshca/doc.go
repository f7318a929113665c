// Package meshca is the built-in offline mesh CA behind `ambient-agent ca`, for meshes with no other CA.
//
// Init creates a root (ECDSA P-256, long-lived) in a directory on the operator's machine; Load reads it back;
// Issue signs a workload X.509 SVID (one URI SAN, the identity, and optionally IP SANs, the addresses the
// workload may claim); WriteIdentity puts one into the files layout of package identity, so that the output
// directory can be copied to a host and used as [identity] dir as is.
// Like nebula-cert: no server, no state beyond the two root files, and the root key never goes to a host.
//
// meshca imports identity (for the layout and IDs) and nothing else of the agent. The running agent does not
// import meshca: only the `ca` subcommand does.
package meshca
