// Package admin serves the agent's operator endpoints: the admin API on loopback
// (/config_dump, /logging, /debug/pprof/, /quitquitquit) and readiness
// (/healthz/ready). It gets everything it shows through the Hooks the composition
// root gives it; it must not import app.
package admin
