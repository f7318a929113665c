package identity_test

import (
	"context"
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
)

// requireTool returns the path of a program a test needs. Under CI=true a missing tool fails the test: a
// skipped test would look like a pass.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI: %v", name, err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
	return path
}

// TestServerRefusesChaCha20 uses OpenSSL as the client, because Go's TLS client cannot be told which TLS 1.3
// suites to offer: a client that offers only ChaCha20 must fail, one that offers AES-256-GCM must pass.
func TestServerRefusesChaCha20(t *testing.T) {
	openssl := requireTool(t, "openssl")
	m := newMesh(t, "cluster.local", idA, idB)
	srv := startTLSServer(t, "127.0.0.1:0", identity.ServerTLSConfig(m.source(t, idA), onlyAddr("127.0.0.1", idA)))
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, m.certs[idB].chainPEM)
	writeFile(t, keyFile, m.certs[idB].keyPEM)
	for _, tc := range []struct {
		suite   string
		id      uint16
		wantErr string
	}{
		{"TLS_CHACHA20_POLY1305_SHA256", tls.TLS_CHACHA20_POLY1305_SHA256, "want AES-GCM"},
		{"TLS_AES_256_GCM_SHA384", tls.TLS_AES_256_GCM_SHA384, ""},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", srv.addr(), "-noservername",
			"-tls1_3", "-ciphersuites", tc.suite, "-alpn", "h2", "-cert", certFile, "-key", keyFile)
		cmd.Stdin = strings.NewReader("")
		out, _ := cmd.CombinedOutput()
		cancel()
		h := srv.next(t)
		switch {
		case tc.wantErr == "" && h.err != nil:
			t.Errorf("%s: server refused OpenSSL: %v\n%s", tc.suite, h.err, out)
		case tc.wantErr == "" && h.state.CipherSuite != tc.id:
			t.Errorf("%s: negotiated %s", tc.suite, tls.CipherSuiteName(h.state.CipherSuite))
		case tc.wantErr != "" && (h.err == nil || !strings.Contains(h.err.Error(), tc.wantErr)):
			t.Errorf("%s: server error %v; want %q\n%s", tc.suite, h.err, tc.wantErr, out)
		}
	}
}
