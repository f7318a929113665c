package app

import (
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
)

// configDump is what /config_dump serves: the effective runtime configuration
// and the agent's state. The runtime Config holds no secret material (key files
// are referenced by path, never loaded into it), so it is shown as is.
type configDump struct {
	Version string         `json:"version"`
	Uptime  string         `json:"uptime"`
	Ready   bool           `json:"ready"`
	Waiting []string       `json:"waitingFor,omitempty"`
	Config  *config.Config `json:"config"`
	// Certificates held for the local workloads: identity and expiry, never keys.
	Certificates []identity.CertInfo `json:"certificates"`
}

func (a *App) configDump() any {
	ok, missing := a.ready.state()
	d := configDump{
		Version: Version,
		Uptime:  time.Since(a.started).Round(time.Second).String(),
		Ready:   ok,
		Waiting: missing,
		Config:  a.cfg.Load(),
	}
	if a.ids != nil {
		d.Certificates = a.ids.Certificates()
	}
	return d
}
