package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/dns"
	"github.com/ambient-agent/ambient-agent/agent/internal/handoff"
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
	spec    nft.DNSSpec         // what capture was installed from
	sockets *handoff.Sockets
	log     *slog.Logger
}

// bindDNS binds the DNS proxy, answering from the mesh state in store. With
// capture, it also listens on [::1] so that IPv6 queries can be redirected
// too; a host without IPv6 loopback captures IPv4 DNS only.
func bindDNS(cfg *config.Config, store *state.Store, socks *handoff.Sockets, log *slog.Logger, reg prometheus.Registerer) (*dnsProxy, error) {
	p := &dnsProxy{log: log, sockets: socks}
	if !cfg.DNS.Enabled {
		return p, nil
	}
	opts := dns.Options{
		Listen:     cfg.DNS.Listen,
		Upstreams:  cfg.DNS.Upstreams,
		Search:     cfg.DNS.Domains,
		Lookup:     func(name string) ([]netip.Addr, []netip.Addr, bool) { return lookupService(store.Load(), name) },
		Control:    capture.MarkControl(cfg.Capture.Mark),
		Log:        log.With("component", "dns"),
		Source:     func(client netip.Addr) (string, string) { return dnsSource(store.Load(), client) },
		Registerer: reg,
		Sockets:    socks,
	}
	if cfg.DNS.Capture {
		v6 := opts
		v6.AlsoListen = []netip.AddrPort{netip.AddrPortFrom(netip.IPv6Loopback(), cfg.DNS.Listen.Port())}
		srv, err := dns.New(v6)
		if err == nil {
			p.srv, p.ipv6 = srv, true
			return p, nil
		}
		log.Warn("dns: cannot listen on [::1]; capturing IPv4 DNS only", "err", err)
	}
	srv, err := dns.New(opts)
	if err != nil {
		return nil, fmt.Errorf("dns: %w (dns.listen)", err)
	}
	p.srv = srv
	return p, nil
}

// lookupService answers the DNS proxy for service hostnames.
func lookupService(snap *state.Snapshot, name string) (v4, v6 []netip.Addr, ok bool) {
	svc, ok := snap.ServiceByHostname(name)
	if !ok || !visibleToHost(snap, svc) {
		return nil, nil, false
	}
	v4, v6 = byFamily(svc.Addresses)
	return v4, v6, true
}

// byFamily splits addresses into IPv4 and IPv6 ones, in order.
func byFamily(addrs []netip.Addr) (v4, v6 []netip.Addr) {
	for _, a := range addrs {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	return v4, v6
}

// dnsSource names the local workload that sent a DNS query from client, for
// the DNS metrics: the owner of the address, else the host's first workload
// (the attribution of an outbound connection from an unrecognised process).
func dnsSource(snap *state.Snapshot, client netip.Addr) (string, string) {
	w := proxy.DefaultSource(snap, client)
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

// close releases the proxy's sockets when New fails after binding them.
func (p *dnsProxy) close() {
	if p.srv != nil {
		p.srv.Close()
	}
}

// installCaptures installs the capture table, then the DNS one.
func (a *App) installCaptures(ctx context.Context) error {
	if err := a.dp.table.install(ctx); err != nil {
		return err
	}
	return a.dns.installCapture(a.cfg.Load(), a.handedState.DNS)
}

// run serves DNS until ctx is done.
func (p *dnsProxy) run(ctx context.Context) error {
	if p.srv == nil {
		return nil
	}
	return p.srv.Run(ctx)
}

// installCapture redirects the host's DNS to the proxy, which listens
// already. The table belongs to this process: the kernel removes it when the
// process ends however it ends, so DNS fails open (docs/dns.md).
//
// An agent that takes over adopts the running agent's table (old: what that
// one installed) when it is the same, else replaces it.
func (p *dnsProxy) installCapture(cfg *config.Config, old *nft.DNSSpec) error {
	want := p.srv != nil && cfg.DNS.Capture
	spec := nft.DNSSpec{Mark: cfg.Capture.Mark, Port: cfg.DNS.Listen.Port(), IPv6: p.ipv6}
	if f := p.sockets.Take(sockDNS); f != nil && old == nil {
		f.Close() // a socket without the table it owns: nothing to adopt
	} else if f != nil {
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		f.Close()
		if err != nil {
			return fmt.Errorf("dns: the DNS table of the running agent: %w", err)
		}
		c, err := capture.AdoptDNS(*old, fd)
		if err != nil {
			return err
		}
		if want && *old == spec {
			p.hold(c, spec)
			p.log.Info("DNS capture adopted from the running agent", "table", "inet ambient_agent_dns", "ipv6", p.ipv6)
			return nil
		}
		// Another table, or none: the running agent's goes (DNS fails open for the moment before this one's).
		if err := c.Close(); err != nil {
			return err
		}
	}
	if !want {
		return nil
	}
	c, err := capture.InstallDNS(spec)
	if err != nil {
		return err
	}
	p.hold(c, spec)
	p.log.Info("DNS capture installed", "table", "inet ambient_agent_dns", "ipv6", p.ipv6)
	return nil
}

// hold keeps c, installed from spec, and offers it to the next handoff.
func (p *dnsProxy) hold(c *capture.DNSCapture, spec nft.DNSSpec) {
	p.capture, p.spec = c, spec
	p.sockets.HoldRaw(sockDNS, c.Dup)
}

// installedSpec is what the DNS table was installed from (nil: none).
func (p *dnsProxy) installedSpec() *nft.DNSSpec {
	if p.capture == nil {
		return nil
	}
	s := p.spec
	return &s
}

// resume puts the DNS table back after a failed handoff, if the agent that
// was taking over replaced it: an existing table is this agent's still.
func (p *dnsProxy) resume() {
	if p.capture == nil {
		return
	}
	c, err := capture.InstallDNS(p.spec)
	if err != nil {
		return // in place: this agent's socket owns it
	}
	_ = p.capture.Release()
	p.hold(c, p.spec)
	p.log.Info("DNS capture put back: the agent that was taking over went away")
}

// leave is the exit of an agent whose DNS table another agent holds.
func (p *dnsProxy) leave() {
	if p.capture != nil {
		_ = p.capture.Release()
		p.capture = nil
	}
}

// removeCapture deletes the DNS table at shutdown.
func (p *dnsProxy) removeCapture() {
	if p.capture == nil {
		return
	}
	if err := p.capture.Close(); err != nil {
		p.log.Error("removing the DNS capture failed (the kernel removes it when the agent exits)", "err", err)
	}
	p.capture = nil
}
