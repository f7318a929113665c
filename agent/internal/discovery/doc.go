// Package discovery finds the other hosts of the mesh and learns what runs on them, with no central server: an
// encrypted hashicorp/memberlist pool (like Consul's LAN pool) in which every node publishes one record about
// itself.
//
// What it owns:
//
//   - membership: binding the gossip port, joining the seeds with backoff (and rejoining failed members and seeds
//     later, so a healed partition merges again), a graceful leave on shutdown;
//   - encryption: the memberlist keyring from the key file (base64 32-byte keys, one a line, the first one sends,
//     all are accepted); without a key only an explicit dev mode runs;
//   - records: this node's own record (SetLocal) and the verified records of the other nodes, with the rules that
//     decide which record of a node is current (see below);
//   - output: the remote workloads as []*state.Workload (Workloads), the remote records (Records), the members
//     (Members) and a coalescing change notification (Changed). The composition root merges the workloads with the
//     local ones and publishes state snapshots; address conflicts are resolved there (state.NewSnapshot).
//
// Which record of a node is current. A node advertises, in its memberlist node metadata, the version, size and
// SHA-256 digest of the record it publishes. memberlist orders those advertisements (incarnation numbers) and a
// node refutes any advertisement about itself that it did not make. A record, however it arrives (a gossip
// broadcast, relayed by any member; a push/pull full state exchange; a direct reply), is used only when its digest
// is the one its node currently advertises. So a member cannot publish a record in another node's name, a stale
// record cannot come back through push/pull, and a newer record always replaces an older one. A record that
// arrives before the advertisement that names it is held (one per node) until the advertisement arrives; a node
// whose advertised record is still missing after a delay is asked for it directly. The records of a node that left
// or failed are used for a grace period and then dropped; they come back only when the node is alive again.
//
// Proofs (proof.go). The gossip key proves only membership. Every workload and waypoint a record claims is signed
// by its own identity's SVID key, with the chain to the trust bundle, over the whole record and an expiry; a
// receiver uses a record only when every claim in it is so proven, and IP SANs prove addresses. The claims are
// handed to state marked with their origin and proof; state settles contests (state/contest.go), never discovery.
//
// Bad input (a record that is corrupt, too large, of a newer incompatible format, invalid, unsigned, mis-signed,
// expired, or claiming what it does not prove) is dropped whole with a rate-limited warning and counted by reason:
// a record is applied completely or not at all.
//
// Gossip only says where things are. It never grants anything: a peer's identity is proven by mTLS against its
// certificate on every connection, and authorization never reads gossip.
//
// discovery may import config and state (lower layers), go-spiffe and memberlist. It must not import app, admin, proxy,
// hbone, capture, dns or policy.
package discovery
