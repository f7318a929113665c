package main

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ambient-agent/ambient-agent/agent/internal/admin"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

// Every command's -h prints its usage on stdout, nothing on stderr, and exits 0; a wrong flag prints the error
// and the usage on stderr and exits 2.
func TestHelpOnStdoutErrorsOnStderr(t *testing.T) {
	for name, cmd := range commands().cmds {
		if cmd.run == nil || name == "help" {
			continue
		}
		code, out, errOut := run(name, "-h")
		if code != 0 || !strings.Contains(out, "usage: ambient-agent") || errOut != "" {
			t.Errorf("%s -h: exit %d, stdout %q, stderr %q; want 0, the usage on stdout, nothing on stderr", name, code, out, errOut)
		}
		code, out, errOut = run(name, "-no-such-flag")
		if code != 2 || out != "" || !strings.Contains(errOut, "usage: ambient-agent") {
			t.Errorf("%s -no-such-flag: exit %d, stdout %q, stderr %q; want 2, the error and usage on stderr", name, code, out, errOut)
		}
	}
}

// fakeAgent serves a control API on a unix socket with the given dump and handlers.
func fakeAgent(t *testing.T, d admin.Dump, extra map[string]http.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) { _ = json.NewEncoder(w).Encode(d) })
	for p, h := range extra {
		mux.HandleFunc(p, h)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock
}

// status exits 0 for a ready agent, 3 for one that answers but is not ready (with the reason), 1 when none
// answers.
func TestStatusExitCodes(t *testing.T) {
	ready := fakeAgent(t, admin.Dump{Ready: true, Version: "test", Config: &config.Config{}}, nil)
	if code, out, _ := run("status", "-socket", ready); code != 0 || !strings.Contains(out, "Ready:      yes") {
		t.Errorf("ready agent: exit %d\n%s", code, out)
	}
	notReady := fakeAgent(t, admin.Dump{Ready: false, Waiting: []string{"certificates"}, Config: &config.Config{}}, nil)
	if code, out, _ := run("status", "-socket", notReady); code != exitNotReady || !strings.Contains(out, "NO: waiting for certificates") {
		t.Errorf("agent not ready: exit %d, want %d\n%s", code, exitNotReady, out)
	}
	if code, _, _ := run("status", "-json", "-socket", notReady); code != exitNotReady {
		t.Errorf("agent not ready, -json: exit %d, want %d", code, exitNotReady)
	}
	if code, out, errOut := run("status", "-socket", filepath.Join(t.TempDir(), "none.sock")); code != 1 || out != "" ||
		!strings.Contains(errOut, "does not answer") {
		t.Errorf("no agent: exit %d, stdout %q, stderr %q; want 1 and the reason on stderr", code, out, errOut)
	}
}

// An agent's refusal (400 and its message) reaches stderr with exit 1, for log-level and probe.
func TestRefusalsAreErrors(t *testing.T) {
	sock := fakeAgent(t, admin.Dump{}, map[string]http.HandlerFunc{
		"/logging": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `level: unknown level "loud"`, http.StatusBadRequest)
		},
		"POST /probe": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `address: "x" is not IP or IP:PORT`, http.StatusBadRequest)
		},
	})
	if code, out, errOut := run("log-level", "-socket", sock, "loud"); code != 1 || out != "" || !strings.Contains(errOut, `unknown level "loud"`) {
		t.Errorf("log-level loud: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, errOut := run("probe", "-socket", sock, "x"); code != 1 || out != "" || !strings.Contains(errOut, "is not IP or IP:PORT") {
		t.Errorf("probe x: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// After "--" every word is an argument, one that starts with "-" too; still at most as many as the command takes.
	if code, _, errOut := run("log-level", "-socket", sock, "--", "loud"); code != 1 || !strings.Contains(errOut, `unknown level "loud"`) {
		t.Errorf("log-level -- loud: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := run("log-level", "-socket", sock, "--", "-a", "-b"); code != 2 || !strings.Contains(errOut, `unexpected argument "-b"`) {
		t.Errorf("log-level -- -a -b: exit %d, stderr %q; want 2", code, errOut)
	}
}
