package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/connlimit"
)

// One source that opens connections and never starts TLS holds at most its share of handshakes; the rest are
// closed at once, and another source still gets its tunnel.
func TestHandshakesPerSourceAreBounded(t *testing.T) {
	var refused atomic.Int64
	h := newHarness(t, harnessOpts{
		server: func(c *ServerConfig) {
			c.Handshakes = connlimit.New(100, 4)
			c.Refused = func(_ netip.AddrPort, stage, limit string) {
				if stage == "handshake" && limit == connlimit.PerSource {
					refused.Add(1)
				}
			}
		},
		pool: func(c *PoolConfig) {
			c.Dialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		},
	})
	var stuck []net.Conn
	defer func() {
		for _, c := range stuck {
			c.Close()
		}
	}()
	for range 50 {
		c, err := net.Dial("tcp", h.srvAddr.String())
		if err != nil {
			t.Fatal(err)
		}
		stuck = append(stuck, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for refused.Load() < 46 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := refused.Load(); n != 46 {
		t.Fatalf("%d connections of one source refused, want 46 (50 - 4)", n)
	}
	closed := 0
	for _, c := range stuck {
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			closed++
		}
	}
	if closed != 46 {
		t.Errorf("%d of the 50 connections were closed, want 46", closed)
	}
	st := h.dial(t, echoServer(t))
	defer st.Close()
	if _, err := st.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("the other source's tunnel: %q %v", buf, err)
	}
}

// Tunnels over the streams limit are answered 503 OVERLOADED; a released one frees its slot.
func TestStreamsAreBounded(t *testing.T) {
	h := newHarness(t, harnessOpts{server: func(c *ServerConfig) { c.Streams = connlimit.New(0, 1) }})
	echo := echoServer(t)
	first := h.dial(t, echo)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st, err := h.pool.Dial(ctx, h.dst.with(request{Authority: echo.String()})); err == nil {
		st.Close()
		t.Fatal("a second stream over a limit of 1 was opened")
	} else if FlagOf(err) != FlagOverloaded && !containsStatus(err, 503) {
		t.Fatalf("the second stream: %v, want 503 OVERLOADED", err)
	}
	first.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := h.pool.Dial(ctx, h.dst.with(request{Authority: echo.String()}))
		if err == nil {
			st.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot of a closed stream was not given back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func containsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}
