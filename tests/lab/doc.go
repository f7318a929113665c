// Package lab is the network-namespace lab of the black-box tests: each "host" is
// a network namespace attached to one bridge, running the real ambient-agent
// binary and unmodified tools (curl, nc, nginx...).
//
// Everything a lab creates lives inside namespaces whose names start with
// "aalab-<pid>-<rand>-", so two runs never collide and nothing is added to the
// host's own namespace: the bridge itself sits in a "switch" namespace. Teardown
// runs through t.Cleanup (also after a failure or a panic), and New sweeps the
// leftovers of runs whose process is gone.
//
// The lab needs root. Require fails the test under CI=true and skips it
// elsewhere, so a lab test can never pass in CI by not running.
package lab
