package handoff

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// Takeover is the new agent's side of a handoff: the sockets of the agent it
// replaces, and the steps that make that one drain.
type Takeover struct {
	c       conn
	Sockets *Sockets        // the inherited sockets, by name
	State   json.RawMessage // the old agent's Source.State
	PID     int             // the old agent's
	Version string          // the old agent's
	done    chan struct{}
}

// Dial asks the agent serving at path for its sockets. With no agent there (no
// socket file, or nobody answering) it returns nil and no error: a fresh start.
func Dial(path, version string) (*Takeover, error) {
	uc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, nil
		}
		return nil, fmt.Errorf("handoff: %s: %w", path, err)
	}
	t, err := takeover(uc, version)
	if err != nil {
		uc.Close()
		return nil, err
	}
	return t, nil
}

// StuckError: an agent holds the handoff socket and does not answer (stopped,
// deadlocked). Nothing can be taken over from it; it must go.
type StuckError struct{ PID int }

func (e *StuckError) Error() string {
	return fmt.Sprintf("handoff: the running agent (pid %d) does not answer within %s", e.PID, answerTimeout)
}

// BusyError: another agent is taking over from the running one; ask again once
// that is over (the agent that serves then answers).
type BusyError struct{ PID int }

func (e *BusyError) Error() string {
	return fmt.Sprintf("handoff: another agent is taking over from the running one (pid %d)", e.PID)
}

// answerTimeout is how long a running agent may take to answer a hello or a probe: a few milliseconds when it
// is well.
const answerTimeout = 10 * time.Second

func takeover(uc *net.UnixConn, version string) (*Takeover, error) {
	pid, err := samePeer(uc)
	if err != nil {
		return nil, err
	}
	c := conn{uc}
	uc.SetDeadline(time.Now().Add(answerTimeout))
	if err := c.send(message{Op: opHello, PID: os.Getpid(), Version: version}, nil); err != nil {
		return nil, err
	}
	m, files, err := c.receive()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, &StuckError{PID: pid}
	}
	if err == nil && m.Op == opBusy {
		closeFiles(files)
		return nil, &BusyError{PID: pid}
	}
	if err == nil && m.Op != opSockets {
		err = fmt.Errorf("handoff: the running agent answered %q, not %q", m.Op, opSockets)
	}
	if err == nil && m.Error != "" {
		err = fmt.Errorf("handoff: the running agent could not hand over its sockets: %s", m.Error)
	}
	if err == nil && len(files) != len(m.Names) {
		err = fmt.Errorf("handoff: the running agent named %d sockets and sent %d", len(m.Names), len(files))
	}
	if err != nil {
		closeFiles(files)
		return nil, err
	}
	uc.SetDeadline(time.Time{})
	inherited := make(map[string]*os.File, len(files))
	for i, f := range files {
		inherited[m.Names[i]] = f
	}
	return &Takeover{c: c, Sockets: NewSockets(inherited), State: m.State, PID: pid, Version: m.Version, done: make(chan struct{})}, nil
}

// Probe says which agent serves at path: its pid and version; pid 0 when
// none does. An agent that does not answer is a StuckError.
func Probe(path string) (pid int, version string, err error) {
	uc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return 0, "", nil
		}
		return 0, "", fmt.Errorf("handoff: %s: %w", path, err)
	}
	defer uc.Close()
	if pid, err = samePeer(uc); err != nil {
		return 0, "", err
	}
	c := conn{uc}
	uc.SetDeadline(time.Now().Add(answerTimeout))
	if err := c.send(message{Op: opProbe}, nil); err != nil {
		return 0, "", err
	}
	m, files, err := c.receive()
	closeFiles(files)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, "", &StuckError{PID: pid}
	}
	if err != nil {
		return 0, "", err
	}
	return pid, m.Version, nil
}

// ReleaseGossip asks the old agent to give up the gossip port.
func (t *Takeover) ReleaseGossip() error {
	m, err := t.ask(opReleaseGossip, opGossipReleased)
	if err == nil && m.Error != "" {
		err = fmt.Errorf("handoff: the old agent did not release gossip: %s", m.Error)
	}
	return err
}

// Drain tells the old agent that this one serves: it stops accepting and
// drains. Done is closed once it has exited.
func (t *Takeover) Drain() error {
	if _, err := t.ask(opDrain, opDraining); err != nil {
		return err
	}
	go func() {
		defer close(t.done)
		for {
			_, files, err := t.c.receive()
			closeFiles(files)
			if err != nil {
				t.c.c.Close()
				return
			}
		}
	}()
	return nil
}

// Done is closed when the old agent has exited after its drain.
func (t *Takeover) Done() <-chan struct{} { return t.done }

// Abort gives up before Drain: the old agent goes on serving and takes back
// what it released.
func (t *Takeover) Abort() {
	t.c.c.Close()
}

func (t *Takeover) ask(op, want string) (message, error) {
	t.c.c.SetDeadline(time.Now().Add(handoffTimeout))
	defer t.c.c.SetDeadline(time.Time{})
	if err := t.c.send(message{Op: op}, nil); err != nil {
		return message{}, err
	}
	m, files, err := t.c.receive()
	closeFiles(files)
	if err != nil {
		return message{}, err
	}
	if m.Op != want {
		return message{}, fmt.Errorf("handoff: the old agent answered %q to %q", m.Op, op)
	}
	return m, nil
}
