// Package admin serves the agent's operator endpoints: the control API on a unix
// socket (/config_dump, /connections, /explain, /probe, /logging, /debug/pprof/,
// /quitquitquit), a read-only
// admin port on loopback, readiness (/healthz/ready) and metrics. It gets
// everything it shows through the Hooks the composition root gives it; it must
// not import app.
package admin
