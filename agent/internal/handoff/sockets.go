package handoff

import (
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Sockets are the listening sockets of one agent: those it inherited from the
// agent it replaced, until it claims them, and those it serves, which it hands
// to the agent that replaces it. The zero value has inherited nothing; a nil
// *Sockets binds everything itself and records nothing.
type Sockets struct {
	mu        sync.Mutex
	inherited map[string]*os.File
	held      []heldSocket
}

type heldSocket struct {
	name string
	dup  func() (int, error) // a new descriptor of the socket, close-on-exec
}

// NewSockets holds files received from another agent, by name.
func NewSockets(inherited map[string]*os.File) *Sockets {
	return &Sockets{inherited: inherited}
}

// Listen returns the inherited listener called name, or else the one bind makes,
// and holds it for the next handoff. A name says what the socket is bound to
// ("tcp 127.0.0.1:15001"), so a changed address binds anew.
func (s *Sockets) Listen(name string, bind func() (net.Listener, error)) (net.Listener, error) {
	if s == nil {
		return bind()
	}
	ln, err := claim(s, name, net.FileListener, bind)
	if err != nil {
		return nil, err
	}
	s.hold(name, ln)
	return ln, nil
}

// ListenPacket is Listen for a datagram socket.
func (s *Sockets) ListenPacket(name string, bind func() (net.PacketConn, error)) (net.PacketConn, error) {
	if s == nil {
		return bind()
	}
	pc, err := claim(s, name, net.FilePacketConn, bind)
	if err != nil {
		return nil, err
	}
	s.hold(name, pc)
	return pc, nil
}

// claim takes the inherited file called name, if any, through fromFile; else it binds.
func claim[T any](s *Sockets, name string, fromFile func(*os.File) (T, error), bind func() (T, error)) (T, error) {
	s.mu.Lock()
	f, ok := s.inherited[name]
	delete(s.inherited, name)
	s.mu.Unlock()
	if !ok {
		return bind()
	}
	defer f.Close() // fromFile holds a duplicate
	v, err := fromFile(f)
	if err != nil {
		var zero T
		return zero, fmt.Errorf("handoff: the inherited socket %s: %w", name, err)
	}
	return v, nil
}

func (s *Sockets) hold(name string, v any) {
	c, ok := v.(syscall.Conn)
	if !ok {
		return // a listener that wraps its socket (tests): not handed over
	}
	s.HoldRaw(name, func() (int, error) { return dupOf(c) })
}

// Take returns the inherited file called name and forgets it (nil: none), for
// a socket that is not a listener (the netlink socket that owns a table).
func (s *Sockets) Take(name string) *os.File {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.inherited[name]
	delete(s.inherited, name)
	return f
}

// HoldRaw holds a socket that is not a listener for the next handoff: dup gives
// a new close-on-exec descriptor of it. A second HoldRaw of a name replaces it.
func (s *Sockets) HoldRaw(name string, dup func() (int, error)) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held = slices.DeleteFunc(s.held, func(h heldSocket) bool { return h.name == name })
	s.held = append(s.held, heldSocket{name: name, dup: dup})
}

// Drop forgets a held socket (a table removed at a reload).
func (s *Sockets) Drop(name string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held = slices.DeleteFunc(s.held, func(h heldSocket) bool { return h.name == name })
}

// Unclaimed closes the inherited sockets nothing claimed (a workload or an
// address the new configuration no longer has) and returns their names.
func (s *Sockets) Unclaimed() []string {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for name, f := range s.inherited {
		names = append(names, name)
		f.Close()
	}
	s.inherited = nil
	slices.Sort(names)
	return names
}

// duplicates are new descriptors of every held socket, by name, for another
// agent. The caller closes them. Raw dup(2) and not File(): an *os.File's Fd
// would make the socket blocking, for this process too.
func (s *Sockets) duplicates() (names []string, fds []int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.held {
		fd, derr := h.dup()
		if derr != nil {
			closeAll(fds)
			return nil, nil, fmt.Errorf("handoff: duplicate %s: %w", h.name, derr)
		}
		names, fds = append(names, h.name), append(fds, fd)
	}
	return names, fds, nil
}

func dupOf(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
