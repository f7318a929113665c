package bench_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/ambient-agent/ambient-agent/tests/bench"
)

// TestQuickBench is CI's smoke run of `make bench`: the quick mode must produce every key of the results with
// sane values. It measures nothing against the targets (numbers on a shared CI machine are not comparable);
// it proves the harness, the three paths (direct, meshed, Istio peer) and the JSON still work. Like every lab
// test it fails under CI=true when it cannot run (no root, no iperf3 or nft).
func TestQuickBench(t *testing.T) {
	res := bench.Run(t, bench.Options{Quick: true, Progress: t.Logf})
	path := filepath.Join(t.TempDir(), "results.json")
	if err := res.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"throughput_1", "throughput_8", "latency_1k", "conn_rate", "cpu_per_1k_rps", "rss", "peer", "waypoint"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("results have no %q key:\n%s", k, b)
		}
	}
	for _, bad := range res.Check() {
		t.Error(bad)
	}
	if t.Failed() {
		t.Logf("results:\n%s", b)
	}
}
