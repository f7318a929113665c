package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := commands().run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelpListsCommands(t *testing.T) {
	code, out, _ := run("-h")
	if code != 0 {
		t.Fatalf("-h exited %d", code)
	}
	for _, c := range []string{"run", "validate", "cleanup", "version", "help", "ca", "authz", "gossip", "status", "workloads", "certs", "policies", "peers", "services", "doctor", "export"} {
		if !strings.Contains(out, "  "+c) {
			t.Errorf("-h does not list %s:\n%s", c, out)
		}
	}
}

func TestWrongUsageExits2(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"validate", "-nope"}, {"validate", "extra"}, {"version", "x"}} {
		code, _, errOut := run(args...)
		if code != 2 || !strings.Contains(errOut, "usage: ambient-agent") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a usage line", args, code, errOut)
		}
	}
}

func TestValidate(t *testing.T) {
	shipped := filepath.Join("..", "..", "..", "conf", "config.toml")
	code, out, errOut := run("validate", "-config", shipped)
	if code != 0 || strings.TrimSpace(out) != "ok" {
		t.Fatalf("validate shipped config: exit %d, out %q, err %q", code, out, errOut)
	}
	src, err := os.ReadFile(shipped)
	if err != nil {
		t.Fatal(err)
	}
	// The shipped file has a [gossip] table: misspell its join key.
	bad := filepath.Join(t.TempDir(), "bad.toml")
	lines := strings.Split(string(src), "\n")
	line := 0
	for i, l := range lines {
		if strings.HasPrefix(l, "join = ") {
			lines[i], line = `jion = ["a"]`, i+1
		}
	}
	if line == 0 {
		t.Fatal("conf/config.toml has no join key")
	}
	if err := os.WriteFile(bad, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = run("validate", "-config", bad)
	want := bad + ":" + strconv.Itoa(line) + ": gossip.jion: unknown key"
	if code != 1 || !strings.Contains(errOut, want) {
		t.Fatalf("validate bad config: exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	code, _, errOut = run("validate", "-config", filepath.Join(t.TempDir(), "missing.toml"))
	if code != 1 || !strings.Contains(errOut, "no such file") {
		t.Fatalf("validate missing file: exit %d, stderr %q", code, errOut)
	}
	// A configuration that relied on the waypoint of its namespace (before
	// explicit binding) is valid, and says it no longer does.
	unbound := filepath.Join(t.TempDir(), "unbound.toml")
	if err := os.WriteFile(unbound, []byte("[node]\nname = \"n\"\n[[workload]]\nname = \"app\"\naddresses = [\"10.0.0.5\"]\n"+
		"[waypoint]\nenabled = true\naddresses = [\"10.0.0.6\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = run("validate", "-config", unbound)
	if want := unbound + `: warning: workload[0] (default/app) names no waypoint, so waypoint default/waypoint of its namespace does not serve it`; code != 0 || strings.TrimSpace(out) != "ok" || !strings.Contains(errOut, want) {
		t.Fatalf("validate unbound: exit %d, out %q, stderr %q; want 0, ok and %q", code, out, errOut, want)
	}
}

// validate finds what would stop the agent at start beyond the file itself: a gossip key file that is not
// there (run refuses to start without one), with every type error of the file reported in the same pass.
func TestValidateChecksTheFilesTheAgentReads(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "gossip.key")
	cfg := filepath.Join(dir, "config.toml")
	write := func(src string) {
		if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("[node]\nname = \"n\"\n[gossip]\nenabled = true\nkey_file = \"" + key + "\"\n")
	code, out, errOut := run("validate", "-config", cfg)
	if code != 1 || out != "" || !strings.Contains(errOut, "gossip.key_file: ") || !strings.Contains(errOut, "gossip keygen") {
		t.Errorf("validate without the gossip key: exit %d, out %q, stderr %q; want 1 naming gossip.key_file", code, out, errOut)
	}
	if code, _, errOut := run("gossip", "keygen", "-out", key); code != 0 {
		t.Fatalf("gossip keygen: %d %s", code, errOut)
	}
	if code, out, errOut := run("validate", "-config", cfg); code != 0 || strings.TrimSpace(out) != "ok" {
		t.Errorf("validate with the key: exit %d, out %q, stderr %q", code, out, errOut)
	}
	write("[node]\nname = 5\n[gossip]\nenabled = \"yes\"\n[dns]\nenabled = 1\n")
	code, _, errOut = run("validate", "-config", cfg)
	if code != 1 || strings.Count(errOut, "wrong type") != 3 {
		t.Errorf("validate with three wrong types: exit %d, stderr %q; want all three", code, errOut)
	}
}
