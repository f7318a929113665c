package dns

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Where the host's DNS servers are listed. systemd-resolved's own file lists its
// real upstreams; /etc/resolv.conf may list only its stub (127.0.0.53), which
// would still work (the proxy's queries are marked, capture lets them through),
// through one more hop.
const (
	resolvedResolvConf = "/run/systemd/resolve/resolv.conf"
	hostResolvConf     = "/etc/resolv.conf"
	recheckEvery       = 5 * time.Second
)

// upstreamSource is the list of upstream servers: given, or read from a
// resolv.conf that is checked for changes (DHCP, VPNs) at most every 5 seconds.
type upstreamSource struct {
	static []netip.AddrPort
	path   string           // "": the default, chosen at each check
	self   []netip.AddrPort // the proxy's own addresses, never an upstream
	log    *slog.Logger
	every  time.Duration
	now    func() time.Time

	mu      sync.Mutex
	list    []netip.AddrPort
	stamp   fileStamp // of the file list was read from
	checked time.Time
	lastErr string // the last read error logged
	warned  bool   // "no upstream" logged since the list was last non-empty
}

// fileStamp tells whether a file changed: a file replaced (inode), rewritten
// (size, modification time), or another file chosen (path).
type fileStamp struct {
	path  string
	mtime time.Time
	size  int64
	inode uint64
}

// newUpstreamSource fails when every given upstream is the proxy itself: it
// would forward each query to itself until the inflight limit is reached.
// Given upstreams that are the proxy are dropped with a warning; config
// validation rejects them first, this is the proxy's own guard.
func newUpstreamSource(o Options, self []netip.AddrPort, log *slog.Logger) (*upstreamSource, error) {
	var static, dropped []netip.AddrPort
	for _, ap := range o.Upstreams {
		if isSelf(ap, self) {
			dropped = append(dropped, ap)
			continue
		}
		static = append(static, ap)
	}
	if len(dropped) > 0 && len(static) == 0 {
		return nil, fmt.Errorf("dns: upstreams %v are the proxy's own address (it serves %v): it would forward to itself", dropped, self)
	}
	if len(dropped) > 0 {
		log.Warn("dns: ignoring upstreams that are the proxy's own address", "ignored", dropped, "servers", static)
	}
	return &upstreamSource{
		static: static,
		path:   o.ResolvConf,
		self:   self,
		log:    log,
		every:  recheckEvery,
		now:    time.Now,
	}, nil
}

// isSelf tells whether ap reaches one of the proxy's addresses: the same
// address and port, or, when the proxy serves a wildcard address, a loopback
// or wildcard address on its port. (With a wildcard the host's other
// addresses would reach it too; the agent only listens on loopback.)
func isSelf(ap netip.AddrPort, self []netip.AddrPort) bool {
	a := ap.Addr().Unmap()
	for _, s := range self {
		if s.Port() != ap.Port() {
			continue
		}
		sa := s.Addr().Unmap()
		if sa == a || sa.IsUnspecified() && (a.IsLoopback() || a.IsUnspecified()) {
			return true
		}
	}
	return false
}

// get returns the upstreams to try, in order.
func (u *upstreamSource) get() []netip.AddrPort {
	if len(u.static) > 0 {
		return u.static
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if now := u.now(); u.checked.IsZero() || now.Sub(u.checked) >= u.every {
		u.checked = now
		u.refresh()
	}
	return u.list
}

// refresh re-reads the file if it changed. Called with u.mu held.
func (u *upstreamSource) refresh() {
	path := u.path
	if path == "" {
		path = hostResolvConf
		if _, err := os.Stat(resolvedResolvConf); err == nil {
			path = resolvedResolvConf
		}
	}
	stamp, err := stampOf(path)
	if err == nil && stamp == u.stamp {
		return
	}
	var list []netip.AddrPort
	if err == nil {
		list, err = u.read(path)
	}
	u.stamp = stamp
	if err != nil && err.Error() != u.lastErr {
		u.log.Warn("dns: cannot read the upstream servers", "err", err)
	}
	u.lastErr = ""
	if err != nil {
		u.lastErr = err.Error()
	}
	if !slices.Equal(list, u.list) && len(list) > 0 {
		u.log.Info("dns: upstream servers", "file", path, "servers", list)
	}
	u.list = list
	switch {
	case len(list) > 0:
		u.warned = false
	case !u.warned:
		u.warned = true
		u.log.Warn("dns: no upstream DNS server: names outside the mesh are answered SERVFAIL until "+path+" lists one", "file", path)
	}
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	st := fileStamp{path: path, mtime: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.inode = sys.Ino
	}
	return st, nil
}

// read returns the file's nameservers on port 53, in order, without duplicates
// and without the proxy itself. Other lines, search and options among them, are
// not the proxy's business: the search domains of mesh names are configuration.
func (u *upstreamSource) read(path string) ([]netip.AddrPort, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []netip.AddrPort
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		ap := netip.AddrPortFrom(a.Unmap(), 53)
		if !isSelf(ap, u.self) && !slices.Contains(out, ap) {
			out = append(out, ap)
		}
	}
	return out, sc.Err()
}
