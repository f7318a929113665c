package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/ambient-agent/ambient-agent/agent/internal/state"
)

// gossipLabel is memberlist's packet and stream label (GCM additional data when encrypted): a memberlist pool of
// another application on the same port is refused even if it happens to share a key.
const gossipLabel = "ambient-agent"

// Discovery is one node of the gossip pool. Build it with New, run it with Run, publish with SetLocal, read with
// Workloads, Records and Members.
type Discovery struct {
	name   string
	opts   Options
	tuning Tuning
	// keys are the gossip keys, the first one sends; keyring is memberlist's, once created. ReloadKeys changes
	// both, under keysMu.
	keysMu  sync.Mutex
	keys    [][]byte
	keyring *memberlist.Keyring
	log     *slog.Logger
	warn    *limiter

	queue    *memberlist.TransmitLimitedQueue
	numAlive atomic.Int64
	ml       atomic.Pointer[memberlist.Memberlist]
	addr     atomic.Pointer[netip.AddrPort]
	ran      atomic.Bool
	handover atomic.Bool // the next end of Run does not leave the pool
	start    sync.Once
	started  chan struct{}
	changed  chan struct{}
	announce chan struct{}
	replies  chan request
	hints    chan netip.AddrPort
	stats    counters

	created time.Time  // when New built this node: its first record waits that long for its certificates
	pubMu   sync.Mutex // serializes publishing this node's record (held before mu)
	// nextAttempt paces publishing after a failure (under pubMu).
	nextAttempt time.Time
	// pace paces this node's record changes (under pubMu; Tuning.PublishBurst).
	pace publishPace
	want *Record // this node's record as SetLocal was given it, before what it cannot prove is left out

	mu       sync.Mutex
	table    *table
	local    *localRecord
	replying map[string]bool
	drops    map[string]uint64
	rejected rejectedCache
	// assembling are the records being put together from fragments (fragment.go).
	assembling assemblies
}

// counters count what discovery did, for status and tests.
type counters struct {
	accepted, relayed, requested, replied atomic.Uint64
}

// view is the output of one generation of the table. It is computed for each call and never kept: held, its
// copies of the services' declarations would weigh as much as the records (docs/scale.md), and a caller builds
// once from it.
type view struct {
	gen       uint64
	workloads []*state.Workload
	services  []state.ServiceDecl
	waypoints []*state.Waypoint
	gateways  []*state.NetworkGateway
	records   []Record
	// unreachable are the addresses of failed or cut-off nodes' workloads (table.unreachable).
	unreachable map[netip.Addr]string
}

// New validates the options and reads the key file. It binds nothing; Run does.
func New(opts Options) (*Discovery, error) {
	keys, err := opts.validate()
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tuning := opts.Tuning.withDefaults()
	d := &Discovery{
		name:     opts.NodeName,
		opts:     opts,
		tuning:   tuning,
		keys:     keys,
		log:      log,
		warn:     newLimiter(log, tuning.WarnInterval),
		started:  make(chan struct{}),
		changed:  make(chan struct{}, 1),
		announce: make(chan struct{}, 1),
		replies:  make(chan request, replyQueue),
		hints:    make(chan netip.AddrPort, hintQueue),
		table:    newTable(opts.NodeName, opts.GracePeriod, tuning.ReconnectTimeout),
		replying: map[string]bool{},
		created:  time.Now(),
	}
	d.numAlive.Store(1)
	d.queue = &memberlist.TransmitLimitedQueue{NumNodes: func() int { return int(d.numAlive.Load()) }, RetransmitMult: 4}
	if len(keys) == 0 {
		log.Warn("gossip: encryption is off (insecure dev mode): anyone who reaches the gossip port can join and read")
	} else if opts.Keys == nil && keyFileExposed(opts.KeyFile) {
		log.Warn("gossip: the key file is readable by every user of this host; make it 0600 or 0640", "file", opts.KeyFile)
	}
	return d, nil
}

// Run binds the gossip port, joins the pool and keeps this node in it until ctx is done; then it leaves
// gracefully (unless Handover was called) and stops every goroutine it started. It returns an error only if the
// pool cannot be started. Run may be called again once it has returned.
func (d *Discovery) Run(ctx context.Context) error {
	if !d.ran.CompareAndSwap(false, true) {
		return errors.New("gossip: Run called twice")
	}
	defer d.ran.Store(false)
	d.handover.Store(false)
	ml, err := d.create()
	if err != nil {
		return err
	}
	d.ml.Store(ml)
	d.start.Do(func() { close(d.started) })
	d.log.Info("gossip: listening", "node", d.name, "bind", d.opts.Bind, "advertise", d.LocalAddr(),
		"encrypted", len(d.keys) > 0, "seeds", strings.Join(d.opts.Join, ","))

	loops, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { d.joinLoop(loops, ml) })
	wg.Go(func() { d.maintainLoop(loops, ml) })
	wg.Go(func() { d.announceLoop(loops, ml) })
	wg.Go(func() { d.replyLoop(loops, ml) })
	<-ctx.Done()
	stop()
	handover := d.handover.Load()
	if !handover {
		if err := ml.Leave(d.tuning.LeaveTimeout); err != nil {
			d.log.Warn("gossip: leave", "err", err)
		}
	}
	if err := ml.Shutdown(); err != nil {
		d.log.Warn("gossip: shutdown", "err", err)
	}
	wg.Wait()
	if handover {
		d.log.Info("gossip: stopped without leaving the pool: the agent that replaces this one takes this node's place", "node", d.name)
		return nil
	}
	d.log.Info("gossip: left the pool", "node", d.name)
	return nil
}

// Handover makes the running Run stop without leaving the pool when its ctx is done: another agent, with this
// node's name, address and records, takes its place, so peers need not drop the node's workloads meanwhile.
func (d *Discovery) Handover() { d.handover.Store(true) }

// create builds memberlist: our transport, encryption, delegates and timings.
func (d *Discovery) create() (*memberlist.Memberlist, error) {
	conf := memberlist.DefaultLANConfig()
	conf.Name = d.name
	conf.Label = gossipLabel
	conf.Logger = memberlistLogger(d.warn)
	g := &delegate{d}
	conf.Delegate, conf.Events, conf.Conflict = g, g, g
	d.keysMu.Lock()
	if len(d.keys) > 0 {
		kr, err := newKeyring(d.keys)
		if err != nil {
			d.keysMu.Unlock()
			return nil, err
		}
		conf.Keyring, d.keyring = kr, kr
	}
	d.keysMu.Unlock()
	// memberlist compresses every packet with a fresh LZW table: measured, that costs a pool of 200 more CPU and
	// garbage than everything else it does, to save little on compact records and tiny probes (docs/gossip.md).
	conf.EnableCompression = false
	conf.GossipVerifyIncoming = !d.opts.InsecureDevMode
	conf.GossipVerifyOutgoing = !d.opts.InsecureDevMode
	if a := d.opts.Advertise; a.IsValid() {
		conf.AdvertiseAddr, conf.AdvertisePort = a.Addr().String(), int(a.Port())
	}
	nt, err := d.bind()
	if err != nil {
		return nil, err
	}
	conf.Transport = nt
	conf.BindAddr, conf.BindPort = d.opts.Bind.Addr().String(), nt.GetAutoBindPort()
	ip, port, err := nt.FinalAdvertiseAddr(conf.AdvertiseAddr, conf.AdvertisePort)
	if err != nil {
		_ = nt.Shutdown()
		return nil, fmt.Errorf("gossip: advertise address: %w", err)
	}
	addr := addrPort(ip, uint16(port))
	d.addr.Store(&addr)
	if err := d.addressKnown(); err != nil {
		_ = nt.Shutdown()
		return nil, err
	}
	if d.tuning.Memberlist != nil {
		d.tuning.Memberlist(conf)
	}
	d.queue.RetransmitMult = conf.RetransmitMult
	ml, err := memberlist.Create(conf)
	if err != nil {
		_ = nt.Shutdown()
		return nil, fmt.Errorf("gossip: start memberlist on %s: %w", d.opts.Bind, err)
	}
	return ml, nil
}

// bind opens the TCP and UDP listeners. Port 0 asks the kernel for a port; as TCP and UDP must share it, a few
// attempts may be needed.
func (d *Discovery) bind() (*memberlist.NetTransport, error) {
	attempts := 1
	if d.opts.Bind.Port() == 0 {
		attempts = 10
	}
	var err error
	for range attempts {
		var nt *memberlist.NetTransport
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{d.opts.Bind.Addr().String()},
			BindPort:  int(d.opts.Bind.Port()),
			Logger:    memberlistLogger(d.warn),
		})
		if err == nil {
			return nt, nil
		}
	}
	return nil, fmt.Errorf("gossip: bind %s: %w", d.opts.Bind, err)
}

// Started is closed once the gossip port is bound (Run has started).
func (d *Discovery) Started() <-chan struct{} { return d.started }

// LocalAddr is the address this node advertises; zero before Started.
func (d *Discovery) LocalAddr() netip.AddrPort {
	if p := d.addr.Load(); p != nil {
		return *p
	}
	return netip.AddrPort{}
}

// Changed receives a value after the remote workloads or records changed. It is 1-buffered: a slow reader skips
// stale versions and reads the latest.
func (d *Discovery) Changed() <-chan struct{} { return d.changed }

// Workloads returns the workloads of the other nodes' current records, ordered by UID. The workloads are shared:
// do not modify them.
func (d *Discovery) Workloads() []*state.Workload {
	return d.output().workloads
}

// Services returns the services the other nodes declare. They are shared: do not modify them.
func (d *Discovery) Services() []state.ServiceDecl {
	return d.output().services
}

// Waypoints returns the waypoints the other nodes run. They are shared: do not modify them.
func (d *Discovery) Waypoints() []*state.Waypoint {
	return d.output().waypoints
}

// Gateways returns the east-west gateways the other nodes run, of the identities allowed to be one. They are
// shared: do not modify them.
func (d *Discovery) Gateways() []*state.NetworkGateway {
	return d.output().gateways
}

func (d *Discovery) gatewayIDs() []string {
	if d.opts.GatewayIdentities == nil {
		return DefaultGatewayIdentities
	}
	return d.opts.GatewayIdentities
}

// Unreachable returns the addresses of the workloads of nodes that failed or were cut off (not those that left)
// and whose records are no longer in use, with the node of each: the mesh's still, until the node comes back or
// is forgotten (Tuning.ReconnectTimeout). Shared: do not modify it.
func (d *Discovery) Unreachable() map[netip.Addr]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.table.unreachable()
}

// View is the output of one generation of the table: what Workloads, Services, Waypoints, Gateways and
// Unreachable return, all of that generation. Shared: do not modify.
type View struct {
	Generation  uint64
	Workloads   []*state.Workload
	Services    []state.ServiceDecl
	Waypoints   []*state.Waypoint
	Gateways    []*state.NetworkGateway
	Unreachable map[netip.Addr]string
}

// Current returns the view of the table's current generation (from which Changes tells what changed next).
func (d *Discovery) Current() View {
	v := d.output()
	return View{Generation: v.gen, Workloads: v.workloads, Services: v.services, Waypoints: v.waypoints,
		Gateways: v.gateways, Unreachable: v.unreachable}
}

// Records returns the other nodes' current records, ordered by node name. They are shared: do not modify them.
func (d *Discovery) Records() []Record {
	return d.output().records
}

func (d *Discovery) output() *view {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := &view{gen: d.table.gen}
	current := d.table.current()
	nw, ns := 0, 0
	for _, h := range current {
		nw, ns = nw+len(h.workloads), ns+len(h.rec.Services)
	}
	v.workloads, v.services = make([]*state.Workload, 0, nw), make([]state.ServiceDecl, 0, ns)
	v.records = make([]Record, 0, len(current))
	for _, h := range current {
		v.workloads = append(v.workloads, h.workloads...)
		v.services = append(v.services, remoteServices(h.rec, h.proof)...) // derived here only: held twice, they weigh
		if w := remoteWaypoint(h.rec, h.proof); w != nil {
			v.waypoints = append(v.waypoints, w)
		}
		if g := remoteGateway(h.rec, h.proof, d.gatewayIDs()); g != nil {
			v.gateways = append(v.gateways, g)
		}
		v.records = append(v.records, *h.rec)
	}
	slices.SortFunc(v.workloads, func(a, b *state.Workload) int { return strings.Compare(a.UID, b.UID) })
	v.unreachable = d.table.unreachable()
	return v
}

// notify wakes the reader of Changed.
func (d *Discovery) notify() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

// parseSeed returns the address of a literal "ip:port" seed.
func parseSeed(s string) (netip.AddrPort, bool) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, false
	}
	a, err := netip.ParseAddr(host)
	p, perr := strconv.ParseUint(port, 10, 16)
	if err != nil || perr != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), true
}
