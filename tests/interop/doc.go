// Package interop tests the agent against independent implementations of what it speaks: today Istio's own Go
// HBONE code (istio.io/istio/pkg/hbone), as a client of our server and as a server for our client.
//
// It is a separate Go module so that Istio's dependencies never enter the agent's go.mod; it points at the
// agent's code with a replace directive. Its module path, github.com/ambient-agent/ambient-agent/agent/internal/
// interop, is under agent/ on purpose although it lives in tests/interop: Go's internal-package rule is checked on
// import paths, across modules, and only a path under agent/ may import agent/internal/hbone and its siblings.
// Run it from this directory:
//
//	cd tests/interop && go test ./...
//
// The istio.io/istio and istio.io/api versions are pinned (spec/environment.md): newer ones name module versions
// the module proxy here refuses.
package interop
