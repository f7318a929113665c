package hbone

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
)

// Error is a failure with its Flag. Every error hbone returns from Dial, Read and Write on a broken tunnel, and
// hands to Telemetry, is or wraps an *Error; FlagOf extracts the flag.
type Error struct {
	Flag Flag
	// Status is the HTTP status of the CONNECT answer when the failure is one (client: what the peer answered;
	// server: what we answered), else 0.
	Status int
	// Op says what was being done ("dial", "handshake", "connect", "read", ...), Addr with whom.
	Op   string
	Addr string
	Err  error
}

func (e *Error) Error() string {
	msg := "hbone: " + e.Op
	if e.Addr != "" {
		msg += " " + e.Addr
	}
	if e.Status != 0 {
		msg += ": status " + strconv.Itoa(e.Status)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg + " [" + string(e.Flag) + "]"
}

func (e *Error) Unwrap() error { return e.Err }

// Timeout reports whether the failure was a timeout, so *Error satisfies net.Error's Timeout contract.
func (e *Error) Timeout() bool {
	return e.Flag == FlagTimeout || e.Flag == FlagUpstreamTimeout || errors.Is(e.Err, os.ErrDeadlineExceeded)
}

// FlagOf returns the Flag of err: FlagNone for nil, the flag of the first *Error in its chain, else FlagReset.
func FlagOf(err error) Flag {
	if err == nil {
		return FlagNone
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Flag
	}
	return FlagReset
}

func newError(flag Flag, op, addr string, err error) *Error {
	return &Error{Flag: flag, Op: op, Addr: addr, Err: err}
}

// Sentinel causes, wrapped in *Error or returned as is where net.Conn semantics ask for them.
var (
	// ErrServerClosed is returned by Serve after Shutdown or Close.
	ErrServerClosed = errors.New("hbone: server closed")
	// ErrPoolClosed is returned by Dial after the pool was closed.
	ErrPoolClosed = errors.New("hbone: pool closed")

	errConnClosed    = errors.New("http2 connection closed")
	errPingTimeout   = errors.New("keepalive ping not answered")
	errWriteAfterEnd = fmt.Errorf("write after CloseWrite: %w", net.ErrClosed)
	errStreamRefused = errors.New("stream refused by peer")
	errGoAway        = errors.New("peer sent GOAWAY")
	errIdle          = errors.New("idle timeout")
)

var (
	errNoPeerCert = errors.New("peer presented no certificate")
	errNoSPIFFE   = errors.New("peer certificate has no SPIFFE URI SAN")
	errManySPIFFE = errors.New("peer certificate has more than one SPIFFE URI SAN")
)

var (
	errCtrlOverflow = errors.New("too many control frames queued (peer not reading)")
	errGoAwaySent   = errors.New("connection closed after GOAWAY")
)
