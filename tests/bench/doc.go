// Package bench is the data-path benchmark harness behind `make bench` (docs/benchmarks.md).
//
// It builds a lab of six hosts on one bridge and measures three pairs of them, back to back, round after round:
//
//	h1 -> h2  meshed: both hosts run the agent, captured, the traffic crosses in HBONE
//	h3 -> h4  direct: no agent, the same veth/bridge path (the baseline every ratio is taken against)
//	h5 -> h6  peer:   the same traffic through Istio's own Go HBONE code (tests/bench/peer), redirected by nftables
//
// Servers are iperf3 (bulk throughput) and loadgen's echo server (tests/bench/cmd/loadgen: fixed-rate 1 KB
// request/response latency, connection rate, held connections for memory). Results are medians over rounds;
// ratios are medians of the per-round ratios, each taken between runs made seconds apart, because these machines
// are shared and noisy.
//
// bench imports only tests/lab; nothing imports bench but its command and its smoke test.
package bench
