package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Server is one HTTP endpoint on a listener bound by the caller, so that a busy
// port is an error at start and not a surprise later.
type Server struct {
	name string
	ln   net.Listener
	srv  *http.Server
}

// NewServer serves h on ln once Run is called.
func NewServer(name string, ln net.Listener, h http.Handler) *Server {
	return &Server{name: name, ln: ln, srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       60 * time.Second,
	}}
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx is done, then shuts down, waiting for in-flight requests
// until the deadline of shutdownCtx.
func (s *Server) Run(ctx context.Context, shutdownCtx func() (context.Context, context.CancelFunc)) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin: %s server on %s: %w", s.name, s.ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := shutdownCtx()
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("admin: %s server shutdown: %w", s.name, err)
	}
	return nil
}

// Close releases the listener of a server that will never Run.
func (s *Server) Close() error { return s.ln.Close() }

// ListenControl binds the control API's unix socket at path with mode 0660 (the
// agent's user and group). A socket file left by an agent that is gone is
// replaced; one another agent still answers on is an error, never taken over.
func ListenControl(path string) (net.Listener, error) {
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another agent answers on %s", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove the stale socket: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	// Bound under a name of its own, made 0660, then renamed into place: the
	// socket at path never has other permissions, whatever the umask.
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, err
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o660); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, err
	}
	return &renamedListener{UnixListener: ul, path: path}, nil
}

// InheritedControl is the control socket at path that a running agent handed
// to this one (package handoff), closed as ListenControl's is.
func InheritedControl(ln net.Listener, path string) (net.Listener, error) {
	if _, ok := ln.(*renamedListener); ok {
		return ln, nil // bound here after all
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		return nil, fmt.Errorf("the inherited control socket %s is not a unix socket", path)
	}
	ul.SetUnlinkOnClose(false)
	l := &renamedListener{UnixListener: ul, path: path}
	l.keep.Store(true) // the running agent's until the takeover completes (KeepSocketFile)
	return l, nil
}

// KeepSocketFile says whether ln's Close leaves the socket file: another
// agent, which holds the same socket, serves on it.
func KeepSocketFile(ln net.Listener, keep bool) {
	if l, ok := ln.(*renamedListener); ok {
		l.keep.Store(keep)
	}
}

// renamedListener removes the socket file, under its final name, when closed.
type renamedListener struct {
	*net.UnixListener
	path string
	keep atomic.Bool
}

// Addr is the socket's final name.
func (l *renamedListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *renamedListener) Close() error {
	err := l.UnixListener.Close()
	if !l.keep.Load() {
		os.Remove(l.path)
	}
	return err
}
