package main

import (
	"bytes"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
)

func TestGossipKeygen(t *testing.T) {
	var out, errb bytes.Buffer
	if code := gossipCommands().run([]string{"keygen"}, &out, &errb); code != 0 {
		t.Fatalf("keygen: %d %s", code, errb.String())
	}
	if key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out.String())); err != nil || len(key) != discovery.KeySize {
		t.Fatalf("keygen printed %q", out.String())
	}
	path := filepath.Join(t.TempDir(), "gossip.key")
	if code := gossipCommands().run([]string{"keygen", "-out", path}, &out, &errb); code != 0 {
		t.Fatalf("keygen -out: %d %s", code, errb.String())
	}
	keys, err := discovery.ReadKeyFile(path)
	if err != nil || len(keys) != 1 {
		t.Fatalf("the written key does not read back: %v", err)
	}
	errb.Reset()
	if code := gossipCommands().run([]string{"keygen", "-out", path}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "exists") {
		t.Errorf("keygen over an existing file: %d %q", code, errb.String())
	}
	if code := gossipCommands().run(nil, &out, &errb); code != 2 {
		t.Errorf("gossip without a command: %d", code)
	}
	if code := gossipCommands().run([]string{"nope"}, &out, &errb); code != 2 {
		t.Errorf("unknown command: %d", code)
	}
}
