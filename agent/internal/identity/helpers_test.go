package identity_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// writePair puts a chain and key into the layout under dir, the way an external tool would.
func writePair(t *testing.T, dir string, id spiffeid.ID, chainPEM, keyPEM []byte) {
	t.Helper()
	ns, sa, ok := identity.ParseIstioID(id)
	if !ok {
		t.Fatalf("%s is not an Istio identity", id)
	}
	if err := identity.WriteFiles(dir, ns, sa, chainPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// logBuffer is a slog destination that tests can read while the source writes to it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
