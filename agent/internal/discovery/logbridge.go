package discovery

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
)

// memberlistLogger turns memberlist's "[LEVEL] memberlist: message" lines into slog records. Warnings and errors
// are rate-limited per message prefix: a node with the wrong key retrying every second must not flood the journal.
func memberlistLogger(l *limiter) *log.Logger {
	return log.New(bridge{l}, "", 0)
}

type bridge struct{ l *limiter }

var levels = [...]struct {
	prefix string
	level  slog.Level
}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}}

func (b bridge) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelInfo
	for _, lv := range levels {
		if rest, ok := strings.CutPrefix(line, lv.prefix); ok {
			level, line = lv.level, strings.TrimSpace(rest)
			break
		}
	}
	line = "gossip: memberlist: " + strings.TrimPrefix(line, "memberlist: ")
	if level <= slog.LevelInfo {
		b.l.log.Log(context.Background(), level, line)
		return len(p), nil
	}
	// memberlist reports a packet it cannot decrypt as an error; for us it is input dropped: a warning.
	key := line
	if len(key) > 48 {
		key = key[:48]
	}
	b.l.logf(slog.LevelWarn, key, line)
	return len(p), nil
}
