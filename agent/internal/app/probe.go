package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/ports"
)

// probeTimeout bounds each step of a probe.
const probeTimeout = 5 * time.Second

// probeSlots bounds the probes under way at once.
var probeSlots = make(chan struct{}, 4)

// ProbeResult is what `ambient-agent probe` reports. Stage is the step that failed ("" when all passed): connect,
// tls or http2.
type ProbeResult struct {
	Address      string  `json:"address"`
	Source       string  `json:"source"`
	OK           bool    `json:"ok"`
	Stage        string  `json:"failedStage,omitempty"`
	Error        string  `json:"error,omitempty"`
	ConnectMs    float64 `json:"connectMs"`
	HandshakeMs  float64 `json:"handshakeMs,omitempty"`
	PeerIdentity string  `json:"peerIdentity,omitempty"`
	TLSVersion   string  `json:"tlsVersion,omitempty"`
	ALPN         string  `json:"alpn,omitempty"`
	// HTTP2 is true once the peer answered the HTTP/2 preface with its SETTINGS: an HBONE server is there.
	HTTP2 bool `json:"http2"`
}

// probe checks an HBONE peer the way a tunnel would start: TCP from a marked socket (never captured), TLS 1.3
// with a local workload's certificate and the peer's SPIFFE identity verified, ALPN h2, the HTTP/2 preface and the
// peer's SETTINGS. It opens no stream and carries nothing.
func (a *App) probe(ctx context.Context, req admin.ProbeRequest) (any, error) {
	select {
	case probeSlots <- struct{}{}:
		defer func() { <-probeSlots }()
	default:
		return nil, errors.New("too many probes at once: try again when the others are done")
	}
	addr, err := probeAddress(req.Address)
	if err != nil {
		return nil, err
	}
	if a.ids == nil {
		return nil, errors.New("this host runs no workload: there is no identity to probe with")
	}
	local, err := a.probeSource(req.As)
	if err != nil {
		return nil, err
	}
	var expected []spiffeid.ID
	if req.Expect != "" {
		id, err := spiffeid.FromString(req.Expect)
		if err != nil {
			return nil, fmt.Errorf("expect: %q is not a SPIFFE ID: %w", req.Expect, err)
		}
		expected = []spiffeid.ID{id}
	}
	res := &ProbeResult{Address: addr.String(), Source: local.String()}
	fail := func(stage string, err error) (any, error) {
		res.Stage, res.Error = stage, err.Error()
		return res, nil
	}

	ctx, cancel := context.WithTimeout(ctx, 3*probeTimeout)
	defer cancel()
	start := time.Now()
	d := markedDialer(a.cfg.Load().Capture)
	d.Timeout = probeTimeout
	nc, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return fail("connect", err)
	}
	defer nc.Close()
	res.ConnectMs = ms(time.Since(start))

	start = time.Now()
	cfg := identity.ProbeTLSConfig(a.ids, local, expected)
	cfg.NextProtos = []string{"h2"}
	tc := tls.Client(nc, cfg)
	hctx, hcancel := context.WithTimeout(ctx, probeTimeout)
	err = tc.HandshakeContext(hctx)
	hcancel()
	if err != nil {
		return fail("tls", err)
	}
	res.HandshakeMs = ms(time.Since(start))
	cs := tc.ConnectionState()
	res.TLSVersion, res.ALPN = tls.VersionName(cs.Version), cs.NegotiatedProtocol
	if len(cs.PeerCertificates) > 0 && len(cs.PeerCertificates[0].URIs) == 1 {
		res.PeerIdentity = cs.PeerCertificates[0].URIs[0].String()
	}
	if cs.NegotiatedProtocol != "h2" && cs.NegotiatedProtocol != "" { // no ALPN is accepted, as tunnels accept it
		return fail("tls", fmt.Errorf("the peer negotiated ALPN %q, not h2: not an HBONE server", cs.NegotiatedProtocol))
	}

	_ = tc.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := tc.Write([]byte(http2.ClientPreface)); err != nil {
		return fail("http2", err)
	}
	fr := http2.NewFramer(tc, tc)
	fr.SetMaxReadFrameSize(16 << 10) // a SETTINGS frame is small: never buffer a peer's 16 MiB frame
	if err := fr.WriteSettings(); err != nil {
		return fail("http2", err)
	}
	f, err := fr.ReadFrame()
	if err != nil {
		return fail("http2", fmt.Errorf("no SETTINGS from the peer: %w", err))
	}
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		return fail("http2", fmt.Errorf("the peer's first frame is %v, not its SETTINGS", f.Header().Type))
	}
	res.HTTP2 = true
	_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	res.OK = true
	return res, nil
}

// probeAddress parses IP[:PORT]; the port is the HBONE port when none is given, and no other is allowed: the
// probe connects from the agent's marked sockets, past the capture rules, so it must not become a port scanner.
func probeAddress(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, errors.New("address: give the peer's address, IP or IP:PORT")
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), ports.HBONE), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address: %q is not IP or IP:PORT", s)
	}
	if ap.Port() != ports.HBONE {
		return netip.AddrPort{}, fmt.Errorf("address: %q: a probe checks a peer's HBONE port, %d, only", s, ports.HBONE)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// probeSource is the local identity a probe presents: as names a SPIFFE ID or a local workload ("name" or
// "namespace/name"); "" is the first local workload's.
func (a *App) probeSource(as string) (spiffeid.ID, error) {
	cfg := a.cfg.Load()
	td, err := spiffeid.TrustDomainFromString(cfg.Node.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, err
	}
	var found []spiffeid.ID
	for _, w := range cfg.Workloads {
		id, err := spiffeid.FromSegments(td, "ns", w.Namespace, "sa", w.ServiceAccount)
		if err != nil {
			continue
		}
		if as == "" || as == id.String() || as == w.Name || as == w.Namespace+"/"+w.Name {
			found = append(found, id)
			if as == "" {
				break
			}
		}
	}
	switch {
	case len(found) == 0 && as == "":
		return spiffeid.ID{}, errors.New("this host has no local workload to probe as")
	case len(found) == 0:
		return spiffeid.ID{}, fmt.Errorf("as: %q is neither a local workload nor its identity", as)
	case len(found) > 1 && found[0] != found[1]:
		return spiffeid.ID{}, fmt.Errorf("as: %q names workloads of several identities: give namespace/name or the SPIFFE ID", as)
	}
	if _, ok := a.ids.Snapshot().Certificate(found[0]); !ok {
		return spiffeid.ID{}, fmt.Errorf("no certificate is held for %s (yet)", found[0])
	}
	return found[0], nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
