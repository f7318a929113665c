package handoff

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// message is one packet of the protocol.
type message struct {
	Op      string          `json:"op"`
	PID     int             `json:"pid,omitempty"`
	Version string          `json:"version,omitempty"`
	Names   []string        `json:"names,omitempty"`
	State   json.RawMessage `json:"state,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// Operations, in the order they happen.
const (
	opHello          = "hello"
	opSockets        = "sockets"
	opReleaseGossip  = "release-gossip"
	opGossipReleased = "gossip-released"
	opDrain          = "drain"
	opDraining       = "draining"
	opProbe          = "probe" // who serves here? No side effect.
	opBusy           = "busy"  // another agent is taking over: ask again later
)

const (
	maxMessage = 64 << 10
	maxFDs     = 250 // below the kernel's SCM_MAX_FD (253)
)

// conn is one end of a handoff connection.
type conn struct{ c *net.UnixConn }

func (c conn) send(m message, fds []int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > maxMessage || len(fds) > maxFDs {
		return fmt.Errorf("handoff: %s: too large (%d bytes, %d sockets)", m.Op, len(b), len(fds))
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("handoff: send %s: %w", m.Op, err)
	}
	return nil
}

// receive reads one message and the descriptors that came with it, close-on-exec
// from the start (MSG_CMSG_CLOEXEC): a child the agent runs never inherits them.
func (c conn) receive() (message, []*os.File, error) {
	rc, err := c.c.SyscallConn()
	if err != nil {
		return message{}, nil, err
	}
	buf, oob := make([]byte, maxMessage), make([]byte, unix.CmsgSpace(maxFDs*4))
	var n, oobn int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return rerr != unix.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return message{}, nil, fmt.Errorf("handoff: receive: %w", err)
	}
	files, ferr := rights(oob[:oobn])
	if n == 0 && oobn == 0 {
		return message{}, files, errClosed
	}
	var m message
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		closeFiles(files)
		return message{}, nil, fmt.Errorf("handoff: a message that is not JSON: %w", err)
	}
	if ferr != nil {
		closeFiles(files)
		return message{}, nil, ferr
	}
	return m, files, nil
}

// errClosed: the other agent closed the connection.
var errClosed = errors.New("handoff: the other agent closed the connection")

// rights are the descriptors of the SCM_RIGHTS messages in oob, as files.
func rights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("handoff: control message: %w", err)
	}
	var files []*os.File
	for _, cm := range cmsgs {
		fds, err := unix.ParseUnixRights(&cm)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "handoff"))
		}
	}
	return files, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// samePeer refuses a peer that is not the agent's own user: the sockets carry
// every connection of the host.
func samePeer(c *net.UnixConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, fmt.Errorf("handoff: peer credentials: %w", cerr)
	}
	if int(cred.Uid) != os.Getuid() {
		return 0, fmt.Errorf("handoff: refused a process of uid %d (pid %d): only the agent's own user (%d) may take over", cred.Uid, cred.Pid, os.Getuid())
	}
	return int(cred.Pid), nil
}
