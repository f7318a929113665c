package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Source is the running agent as a handoff sees it.
type Source interface {
	// State is what the new agent needs to adopt the sockets that own tables.
	State() json.RawMessage
	// Adopting: a new agent holds the sockets and installs its own rules; stop
	// putting back the shared ones.
	Adopting()
	// ReleaseGossip stops gossip without leaving the pool, so that the new agent
	// can bind its port and take this node's place.
	ReleaseGossip() error
	// Drain stops accepting and relays what is open until it ends or the
	// drain deadline; the process then exits.
	Drain()
	// Resume takes back what Adopting and ReleaseGossip gave up: the new
	// agent went away before it asked for the drain.
	Resume()
}

// Server answers the agent that replaces this one, at most one at a time.
type Server struct {
	ln      *net.UnixListener
	path    string
	ino     uint64 // of the socket file as bound: Close removes only that one
	sockets *Sockets
	src     Source
	version string
	log     *slog.Logger

	busy    atomic.Bool // a handoff is under way
	drained atomic.Bool // this agent drains for the one it handed over to

	mu   sync.Mutex
	kept *net.UnixConn // the connection of the agent this one drained for: it ends with this process
}

// handoffTimeout bounds each step the new agent waits for, and each it takes.
const handoffTimeout = 30 * time.Second

// adoptTimeout bounds how long the running agent waits for the new one to be ready and ask for the drain.
const adoptTimeout = 2 * time.Minute

// Listen binds the handoff socket at path, mode 0600, replacing one an agent
// this one took over from left there.
func Listen(path string, sockets *Sockets, src Source, version string, log *slog.Logger) (*Server, error) {
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: tmp, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("handoff: listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	err = os.Chmod(tmp, 0o600)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	var ino uint64
	if err == nil {
		ino, err = inode(path)
	}
	if err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("handoff: listen on %s: %w", path, err)
	}
	return &Server{ln: ln, path: path, ino: ino, sockets: sockets, src: src, version: version, log: log}, nil
}

// Serve answers agents that want to take over until ctx is done or one has:
// then this agent drains, and serves no other. Each connection is answered on
// its own: a probe, or a second agent while one takes over (told it is busy),
// never waits behind a handoff.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || s.drained.Load() {
				return nil
			}
			return fmt.Errorf("handoff: accept: %w", err)
		}
		wg.Go(func() {
			if s.handle(ctx, c) {
				s.drained.Store(true)
				s.ln.Close()
			}
		})
	}
}

// handle answers one agent; true once this agent is draining for it.
func (s *Server) handle(ctx context.Context, uc *net.UnixConn) (draining bool) {
	pid, err := samePeer(uc)
	if err != nil {
		s.log.Warn("handoff refused", "err", err)
		uc.Close()
		return false
	}
	log := s.log.With("new_pid", pid)
	stop := context.AfterFunc(ctx, func() { uc.Close() })
	defer func() {
		stop()
		if !draining {
			uc.Close()
		}
	}()
	c := conn{uc}
	uc.SetDeadline(time.Now().Add(handoffTimeout))
	hello, files, err := c.receive()
	closeFiles(files)
	if err == nil && hello.Op == opProbe {
		c.send(message{Op: opProbe, PID: os.Getpid(), Version: s.version}, nil)
		return false
	}
	if err != nil || hello.Op != opHello {
		log.Warn("handoff: no hello from the new agent", "err", err, "op", hello.Op)
		return false
	}
	if !s.busy.CompareAndSwap(false, true) {
		log.Info("handoff: another agent is taking over already; this one is told to wait")
		c.send(message{Op: opBusy, PID: os.Getpid()}, nil)
		return false
	}
	defer func() {
		if !draining {
			s.busy.Store(false)
		}
	}()
	log = log.With("new_version", hello.Version)
	names, fds, err := s.sockets.duplicates()
	if err != nil {
		log.Error("handoff: the sockets could not be handed over", "err", err)
		c.send(message{Op: opSockets, Error: err.Error()}, nil)
		return false
	}
	// Before the sockets go: the new agent may install its rules as soon as it has them.
	s.src.Adopting()
	err = c.send(message{Op: opSockets, PID: os.Getpid(), Version: s.version, Names: names, State: s.src.State()}, fds)
	closeAll(fds)
	if err != nil {
		log.Warn("handoff: the new agent went away; this agent goes on serving", "err", err)
		s.src.Resume()
		return false
	}
	log.Info("handoff: a new agent took this agent's sockets; it serves alongside until it is ready", "sockets", len(names))
	// The new agent has its own deadline to become ready; one that neither drains nor gives up (stopped) does not
	// keep this agent from repairing its table for ever.
	uc.SetDeadline(time.Now().Add(adoptTimeout))
	for {
		m, files, err := c.receive()
		closeFiles(files)
		if err != nil {
			switch {
			case errors.Is(err, errClosed):
				err = errors.New("it exited or gave up")
			case errors.Is(err, os.ErrDeadlineExceeded):
				err = fmt.Errorf("not ready within %s", adoptTimeout)
			}
			log.Warn("handoff: the new agent went away before it was ready: this agent goes on serving", "err", err)
			s.src.Resume()
			return false
		}
		switch m.Op {
		case opReleaseGossip:
			reply := message{Op: opGossipReleased}
			if err := s.src.ReleaseGossip(); err != nil {
				reply.Error = err.Error()
			}
			log.Info("handoff: gossip released for the new agent")
			if c.send(reply, nil) != nil {
				s.src.Resume()
				return false
			}
		case opDrain:
			if err := c.send(message{Op: opDraining, PID: os.Getpid()}, nil); err != nil {
				log.Warn("handoff: the new agent went away as it asked for the drain: this agent goes on serving", "err", err)
				s.src.Resume()
				return false
			}
			stop() // the connection ends with this process, not with its serving
			s.mu.Lock()
			s.kept = uc
			s.mu.Unlock()
			log.Info("handoff: the new agent serves; this one stops accepting and drains")
			s.src.Drain()
			return true
		default:
			log.Warn("handoff: an unknown request; this agent goes on serving", "op", m.Op)
			s.src.Resume()
			return false
		}
	}
}

// Close stops serving and removes the socket file if it is still this
// server's: never after a handoff (the new agent's replaces it, perhaps this
// very moment).
func (s *Server) Close() error {
	err := s.ln.Close()
	if s.drained.Load() {
		return err
	}
	if ino, ierr := inode(s.path); ierr == nil && ino == s.ino {
		os.Remove(s.path)
	}
	return err
}

func inode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}
