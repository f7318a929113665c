package app

// Version is the agent's version, set at build time with
// -ldflags "-X github.com/ambient-agent/ambient-agent/agent/internal/app.Version=...".
var Version = "0.0.0-dev"
