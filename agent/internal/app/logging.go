package app

import (
	"io"
	"log/slog"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

// newLogger builds the agent's logger; its level lives in lvl so that reload and
// the admin API can change it while the agent runs.
func newLogger(c config.Log, w io.Writer, lvl *slog.LevelVar) *slog.Logger {
	lvl.Set(c.Level)
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == config.FormatJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
