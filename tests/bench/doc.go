// Package bench is the data-path benchmark harness behind `make bench` (docs/benchmarks.md).
//
// It builds a lab of hosts on one bridge and measures pairs of them, back to back, round after round:
//
//	h1 -> h2   direct:  no agent, the same veth/bridge path (the baseline every ratio is taken against)
//	h3 -> h4   meshed:  both hosts run the agent, captured, the traffic crosses in HBONE
//	h5 -> h6   peer:    the same traffic through Istio's own Go HBONE code (tests/bench/peer), redirected by nftables
//	h7 -> h8   stunnel: a plain mutual TLS 1.3 tunnel in C (stunnel4), redirected the same way: what TLS alone costs
//	h9 -> h10  compare: a second agent binary, only with Options.Compare (before/after in the same rounds)
//
// Servers are iperf3 (bulk throughput) and loadgen's echo server (tests/bench/cmd/loadgen: fixed-rate 1 KB
// request/response latency, connection rate, held connections for memory). Results are medians over rounds;
// ratios are medians of the per-round ratios, each taken between runs made seconds apart, because these machines
// are shared and noisy.
//
// bench imports only tests/lab; nothing imports bench but its command and its smoke test.
package bench
