package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/connlimit"
)

// listener runs an accept loop and tracks the connections it handed out, so a
// drain can wait for them and close what is left at the deadline.
type listener struct {
	name   string
	ln     net.Listener
	log    *slog.Logger
	handle func(ctx context.Context, c net.Conn)
	// limit bounds the open connections (nil: no limit); refused hears of
	// each one it closed.
	limit   *connlimit.Limiter
	refused func(listener string, remote netip.AddrPort, limit string)

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newListener(name string, ln net.Listener, log *slog.Logger, handle func(context.Context, net.Conn)) *listener {
	return &listener{name: name, ln: ln, log: log, handle: handle, conns: map[net.Conn]struct{}{}}
}

// run accepts until ctx is done, then stops accepting and drains: open
// connections get until drainDeadline's context ends, then they are closed.
func (l *listener) run(ctx context.Context, drain func() (context.Context, context.CancelFunc)) error {
	connCtx, cancelConns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelConns()
	stop := context.AfterFunc(ctx, func() { l.ln.Close() })
	defer stop()
	var acceptErr error
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				if isTemporary(err) {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				acceptErr = fmt.Errorf("proxy: %s accept on %s: %w", l.name, l.ln.Addr(), err)
			}
			break
		}
		release, ok := l.acquire(c)
		if !ok {
			continue
		}
		l.track(c)
		go func() {
			defer release()
			defer l.untrack(c)
			l.handle(connCtx, c)
		}()
	}
	l.drain(drain, cancelConns)
	return acceptErr
}

// acquire takes a slot of the limit for c, or closes c and reports it.
func (l *listener) acquire(c net.Conn) (release func(), ok bool) {
	if l.limit == nil {
		return func() {}, true
	}
	remote := addrPort(c.RemoteAddr())
	release, refused := l.limit.Acquire(remote.Addr())
	if release != nil {
		return release, true
	}
	c.Close()
	if l.refused != nil {
		l.refused(l.name, remote, refused)
	}
	return nil, false
}

func (l *listener) track(c net.Conn) {
	l.mu.Lock()
	l.conns[c] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
}

func (l *listener) untrack(c net.Conn) {
	c.Close()
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	l.wg.Done()
}

func (l *listener) drain(drain func() (context.Context, context.CancelFunc), cancelConns func()) {
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	dctx, cancel := drain()
	defer cancel()
	select {
	case <-done:
		return
	case <-dctx.Done():
	}
	l.mu.Lock()
	n := len(l.conns)
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	cancelConns()
	l.log.Info("drain deadline reached, closed open connections", "listener", l.name, "connections", n)
	<-done
}

func isTemporary(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
