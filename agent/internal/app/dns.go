package app

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/dns"
	"github.com/ambient-agent/ambient-agent/agent/internal/proxy"
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
	"github.com/ambient-agent/ambient-agent/nft"
)

// dnsProxy is the DNS proxy and, with [dns] capture, the table that sends
// the host's DNS to it.
type dnsProxy struct {
	srv     *dns.Server         // nil when [dns] enabled = false
	ipv6    bool                // the proxy also listens on ::1, so IPv6 DNS can be captured
	capture *capture.DNSCapture // nil until installed
}

// bindDNS binds the DNS proxy. With capture, it also listens on [::1] so that
// IPv6 queries can be redirected too; a host without IPv6 loopback captures
// IPv4 DNS only.
func (a *App) bindDNS(cfg *config.Config) error {
	if !cfg.DNS.Enabled {
		return nil
	}
	opts := dns.Options{
		Listen:     cfg.DNS.Listen,
		Upstreams:  cfg.DNS.Upstreams,
		Search:     cfg.DNS.Domains,
		Lookup:     a.lookupService,
		Control:    capture.MarkControl(cfg.Capture.Mark),
		Log:        a.log.With("component", "dns"),
		Source:     a.dnsSource,
		Registerer: a.registry,
	}
	if cfg.DNS.Capture {
		v6 := opts
		v6.AlsoListen = []netip.AddrPort{netip.AddrPortFrom(netip.IPv6Loopback(), cfg.DNS.Listen.Port())}
		srv, err := dns.New(v6)
		if err == nil {
			a.dns = dnsProxy{srv: srv, ipv6: true}
			return nil
		}
		a.log.Warn("dns: cannot listen on [::1]; capturing IPv4 DNS only", "err", err)
	}
	srv, err := dns.New(opts)
	if err != nil {
		return fmt.Errorf("dns: %w (dns.listen)", err)
	}
	a.dns = dnsProxy{srv: srv}
	return nil
}

// lookupService answers the DNS proxy for service hostnames.
func (a *App) lookupService(name string) (v4, v6 []netip.Addr, ok bool) {
	snap := a.state.Load()
	svc, ok := snap.ServiceByHostname(name)
	if !ok || !visibleToHost(snap, svc) {
		return nil, nil, false
	}
	for _, vip := range svc.Addresses {
		if vip.Is4() {
			v4 = append(v4, vip)
		} else {
			v6 = append(v6, vip)
		}
	}
	return v4, v6, true
}

// dnsSource names the local workload that sent a DNS query from client, for
// the DNS metrics: the owner of the address, else the host's first workload
// (the attribution of an outbound connection from an unrecognised process).
func (a *App) dnsSource(client netip.Addr) (string, string) {
	w := proxy.DefaultSource(a.state.Load(), client)
	if w == nil {
		return "", ""
	}
	name := telemetry.WorkloadName(w.Labels, w.Name)
	return telemetry.CanonicalService(w.Labels, name), telemetry.CanonicalRevision(w.Labels)
}

// visibleToHost reports whether a process of this host may see the service:
// the proxy cannot tell which local workload asked, so a service visible to
// its namespace only is answered when a local workload is of that namespace
// (the outbound proxy still routes it only for that workload's connections).
func visibleToHost(snap *state.Snapshot, svc *state.Service) bool {
	if !svc.NamespaceOnly {
		return true
	}
	return slices.ContainsFunc(snap.Local(), func(w *state.Workload) bool { return w.Namespace == svc.Namespace })
}

// closeDNS releases the proxy's sockets when New fails after binding them.
func (a *App) closeDNS() {
	if a.dns.srv != nil {
		a.dns.srv.Close()
	}
}

// installCaptures installs the capture table, then the DNS one.
func (a *App) installCaptures(ctx context.Context) error {
	if err := a.installCapture(ctx); err != nil {
		return err
	}
	return a.installDNSCapture(a.cfg.Load())
}

// runDNS serves DNS until ctx is done.
func (a *App) runDNS(ctx context.Context) error {
	if a.dns.srv == nil {
		return nil
	}
	return a.dns.srv.Run(ctx)
}

// installDNSCapture redirects the host's DNS to the proxy, which listens
// already. The table belongs to this process: the kernel removes it when the
// process ends however it ends, so DNS fails open (docs/dns.md).
func (a *App) installDNSCapture(cfg *config.Config) error {
	if a.dns.srv == nil || !cfg.DNS.Capture {
		return nil
	}
	c, err := capture.InstallDNS(nft.DNSSpec{Mark: cfg.Capture.Mark, Port: cfg.DNS.Listen.Port(), IPv6: a.dns.ipv6})
	if err != nil {
		return err
	}
	a.dns.capture = c
	a.log.Info("DNS capture installed", "table", "inet ambient_agent_dns", "ipv6", a.dns.ipv6)
	return nil
}

// removeDNSCapture deletes the DNS table at shutdown.
func (a *App) removeDNSCapture() {
	if a.dns.capture == nil {
		return
	}
	if err := a.dns.capture.Close(); err != nil {
		a.log.Error("removing the DNS capture failed (the kernel removes it when the agent exits)", "err", err)
	}
	a.dns.capture = nil
}
