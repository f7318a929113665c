package hbone

import (
	"context"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/leak"
)

// TestThousandTunnelsNoLeak opens and closes 1000 tunnels (graceful half-closes, abrupt closes, and tunnels
// closed without carrying a byte, from 8 goroutines at once), then checks that no goroutine or file descriptor
// is left behind: first while the pool and server are still up (nothing per tunnel survives it), then after
// both are closed (nothing at all survives them).
func TestThousandTunnelsNoLeak(t *testing.T) {
	checkAll := leak.Check(t, leak.Options{})
	t.Run("tunnels", func(t *testing.T) {
		h := newHarness(t, harnessOpts{})
		echo := echoServer(t)
		st := h.dial(t, echo) // warm up: the pooled connection and its goroutines exist from here on
		_ = st.Close()
		checkTunnels := leak.Check(t, leak.Options{})

		const tunnels, workers = 1000, 8
		var wg sync.WaitGroup
		errs := make(chan error, tunnels)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < tunnels; i += workers {
					if err := oneTunnel(h, echo.String(), i%3); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		h.srvTel.waitFor(t, "1001 server tunnels closed", func(r *recorder) bool { return len(r.closed) == tunnels+1 })
		h.cliTel.waitFor(t, "1001 client tunnels closed", func(r *recorder) bool { return len(r.closed) == tunnels+1 })
		checkTunnels()
		if n := h.pool.Conns(h.dst.Key()); n < 1 || n > 2 {
			t.Errorf("pool holds %d connections for one key after 1000 sequential-ish tunnels", n)
		}
	})
	runtime.GC()
	checkAll()
}

// oneTunnel runs one tunnel in one of three styles.
func oneTunnel(h *harness, target string, style int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := h.pool.Dial(ctx, h.dst.with(request{Authority: target}))
	if err != nil {
		return err
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(10 * time.Second))
	switch style {
	case 0: // graceful: write, half-close, read the echo to EOF
		if _, err := st.Write([]byte("ping")); err != nil {
			return err
		}
		if err := st.CloseWrite(); err != nil {
			return err
		}
		b, err := io.ReadAll(st)
		if err != nil || string(b) != "ping" {
			return err
		}
	case 1: // abrupt: read the echo, then Close (RST_STREAM CANCEL) with our side still open
		if _, err := st.Write([]byte("pong")); err != nil {
			return err
		}
		if _, err := io.ReadFull(st, make([]byte, 4)); err != nil {
			return err
		}
	case 2: // nothing carried
	}
	return nil
}
