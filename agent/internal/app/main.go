package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

// Main runs the daemon with the configuration at path and returns the process
// exit code. Signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads.
func Main(path string, stderr io.Writer) int {
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
	log := newLogger(cfg.Log, stderr, level)

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
	if err := a.Run(ctx, hup); err != nil {
		return 1
	}
	return 0
}

// Cleanup removes every piece of host state the agent may have left behind:
// its nftables table (other tables are never touched).
func Cleanup() error {
	return capture.Cleanup()
}
