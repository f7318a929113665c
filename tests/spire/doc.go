// Package spire runs a real SPIRE deployment (spire-server and spire-agent v1.13.3) for tests: a server with
// a sqlite datastore and join-token node attestation, and an agent with the unix workload attestor, in a
// temporary directory, stopped when the test ends.
//
// The binaries are built once by tests/tools/build-spire.sh into a cache outside the repository and looked up
// in $SPIRE_BIN_DIR, else ${AMBIENT_TOOLS_CACHE:-$HOME/.cache/ambient-agent}/spire-v1.13.3/bin. Without them a
// test skips, except under CI=true, where it fails: a skipped test would look like a pass.
//
// The test of the agent's spire identity source is agent/internal/identity/spire_real_test.go: it has to live
// under agent/ to import the internal identity package, and uses this package to run SPIRE. This package's own
// test checks the harness with go-spiffe's Workload API client. It imports nothing of the agent.
package spire
