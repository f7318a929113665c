package proxy

// brokenOutbound is nil in every build but the soak's deliberately broken ones (build tags soakbroken_leak and
// soakbroken_plaintext, tests/e2e TestSoakCatchesBrokenAgents), which prove that the soak fails on a goroutine
// leak and on one plaintext byte. It runs for each captured connection the agent sends through a tunnel.
var brokenOutbound func(o *Outbound, r Route)
