package admin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A live socket is never taken over; a stale one (its agent gone) is replaced.
func TestListenControlRefusesALiveSocketAndReplacesAStaleOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "control.sock")
	ln, err := ListenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode: %v %v, want 0660", fi.Mode(), err)
	}
	if _, err := ListenControl(path); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Fatalf("second ListenControl on a live socket: %v", err)
	}
	// A socket file nobody listens on, as a killed agent leaves it.
	ln.(*renamedListener).UnixListener.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the stale socket is gone already: %v", err)
	}
	ln, err = ListenControl(path)
	if err != nil {
		t.Fatalf("ListenControl over a stale socket: %v", err)
	}
	ln.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the socket outlived its listener: %v", err)
	}
}

// The listener names the socket by its final path.
func TestListenControlAddr(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := ListenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := ln.Addr().String(); got != path {
		t.Fatalf("Addr %q, want %q", got, path)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("%d files beside the socket, want none: %v", len(entries)-1, entries)
	}
}
