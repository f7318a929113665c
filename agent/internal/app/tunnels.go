package app

import (
	"context"
	"errors"
	"net"

	"github.com/ambient-agent/ambient-agent/agent/internal/proxy"
)

// errNoHBONE is returned until the HBONE client is wired in.
var errNoHBONE = errors.New("hbone: client not available")

type noTunnels struct{}

func (noTunnels) DialTunnel(context.Context, proxy.Tunnel) (net.Conn, error) { return nil, errNoHBONE }

func (a *App) tunnels() proxy.TunnelDialer { return noTunnels{} }
