package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

// RunOptions are the daemon's command-line choices.
type RunOptions struct {
	// KeepCapture leaves the capture table in place when the agent exits, however
	// it exits: the host stays closed (captured connections are refused) until an
	// agent starts and adopts the table, or a deliberate act removes it (the
	// systemd unit's ExecStopPost on `systemctl stop`, `ambient-agent cleanup`).
	KeepCapture bool
}

// Main runs the daemon with the configuration at path and returns the process
// exit code. Signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads.
func Main(path string, opts RunOptions, stderr io.Writer) int {
	setGCDefault()
	cfg, err := config.Load(path)
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				fmt.Fprintln(stderr, p)
			}
		} else {
			fmt.Fprintln(stderr, err)
		}
		fmt.Fprintln(stderr, "ambient-agent: not started: fix the configuration")
		return 1
	}
	level := new(slog.LevelVar)
	logOut := newLogWriter(stderr)
	defer logOut.Close()
	log := newLogger(cfg.Log, logOut, level)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	a, err := New(cfg, log, level)
	if err != nil {
		log.Error("agent not started", "err", err)
		return 1
	}
	a.dp.table.keep = opts.KeepCapture
	if err := a.Run(ctx, hup); err != nil {
		return 1
	}
	return 0
}

// gcPercent is the agent's GOGC. The heap an agent keeps is small and long-lived (connections, tunnels, the mesh
// model) and its garbage per message is a few small objects, so collecting at 50% growth rather than Go's 100%
// costs little CPU and keeps the resident memory closer to what is live: measured in docs/benchmarks.md ("Memory
// per tunnel").
const gcPercent = 50

// setGCDefault applies gcPercent unless the environment sets GOGC, which then wins as it does for any Go program.
func setGCDefault() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
}
