//go:build scaleharness

package policy

import (
	"testing"
)

// The scale harness's policy decisions (make bench-scale, docs/scale.md): 10,003 policies (benchPolicies), one
// decision per destination of 1,024 cycled, warm and with the caches cold.

// BenchmarkScalePolicy: decisions in a row over 1,024 destinations (the set stays in the CPU's caches).
func BenchmarkScalePolicy(b *testing.B) {
	b.Run("n=10000", func(b *testing.B) { benchEvaluate(b, benchNamespaces, benchConnectionCycle) })
}

// BenchmarkScalePolicyCold: each decision after 64 MiB were written (outside the timed part), so that the
// policies it reads come from memory, as the first connection to a destination after a while would find them.
func BenchmarkScalePolicyCold(b *testing.B) {
	b.Run("n=10000", func(b *testing.B) { benchCold(b, benchNamespaces) })
}

// BenchmarkScalePolicyColdBaseline is the same decision with the caches as cold, among the 23 policies of one
// namespace: what a cold decision costs on this machine whatever the number of policies, against which
// BenchmarkScalePolicyCold's is read (make bench-scale prints the ratio).
func BenchmarkScalePolicyColdBaseline(b *testing.B) {
	b.Run("n=10000", func(b *testing.B) { benchCold(b, 1) })
}

func benchCold(b *testing.B, namespaces int) {
	set := benchSet(b, namespaces)
	conns := benchConns(namespaces)
	thrash := make([]byte, 64<<20)
	allowed := 0
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		for j := 0; j < len(thrash); j += 64 {
			thrash[j]++
		}
		b.StartTimer()
		if set.Evaluate(conns[(i*7919)%len(conns)]).Allow {
			allowed++
		}
	}
	if allowed == 0 {
		b.Fatal("nothing allowed: the benchmark does not exercise ALLOW matches")
	}
}
