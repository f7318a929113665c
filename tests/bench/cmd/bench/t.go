package main

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// benchT gives the lab what it needs from a test (lab.T): a failure ends the run, cleanups run at the end
// whatever happened (as tests/demo does).
type benchT struct {
	mu       sync.Mutex
	cleanups []func()
	failed   bool
	tmp      string
}

var errFatal = errors.New("bench failed")

func (b *benchT) Helper()                           {}
func (b *benchT) Logf(format string, args ...any)   { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (b *benchT) Errorf(format string, args ...any) { b.setFailed(); b.Logf(format, args...) }
func (b *benchT) Fatal(args ...any)                 { b.setFailed(); fmt.Fprintln(os.Stderr, args...); panic(errFatal) }
func (b *benchT) Fatalf(format string, args ...any) { b.Fatal(fmt.Sprintf(format, args...)) }
func (b *benchT) Skipf(format string, args ...any)  { b.Fatalf(format, args...) }

func (b *benchT) Failed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failed
}

func (b *benchT) setFailed() {
	b.mu.Lock()
	b.failed = true
	b.mu.Unlock()
}

func (b *benchT) Cleanup(f func()) {
	b.mu.Lock()
	b.cleanups = append(b.cleanups, f)
	b.mu.Unlock()
}

func (b *benchT) TempDir() string {
	if b.tmp == "" {
		dir, err := os.MkdirTemp("", "ambient-agent-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.tmp = dir
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	return b.tmp
}

// recover turns a Fatal into exit code 1; other panics propagate after cleanup.
func (b *benchT) recover(code *int) {
	r := recover()
	if r == nil {
		return
	}
	*code = 1
	if r != errFatal {
		b.runCleanups()
		panic(r)
	}
}

// runCleanups runs the cleanups once, last registered first.
func (b *benchT) runCleanups() {
	b.mu.Lock()
	cs := b.cleanups
	b.cleanups = nil
	b.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}
