package main

import (
	"errors"
	"fmt"
	"os"
)

// demoT gives the lab what it needs from a test: failures end the demo, and
// cleanups run at the end, whatever happened.
type demoT struct {
	cleanups []func()
	failed   bool
	tmp      string
}

var errFatal = errors.New("demo failed")

func newDemoT() *demoT { return &demoT{} }

func (d *demoT) Helper()                           {}
func (d *demoT) Logf(format string, args ...any)   { fmt.Printf(format+"\n", args...) }
func (d *demoT) Errorf(format string, args ...any) { d.failed = true; d.Logf(format, args...) }
func (d *demoT) Fatal(args ...any)                 { d.failed = true; fmt.Println(args...); panic(errFatal) }
func (d *demoT) Fatalf(format string, args ...any) { d.Fatal(fmt.Sprintf(format, args...)) }
func (d *demoT) Skipf(format string, args ...any)  { d.Fatalf(format, args...) }
func (d *demoT) Failed() bool                      { return d.failed }
func (d *demoT) Cleanup(f func())                  { d.cleanups = append(d.cleanups, f) }

func (d *demoT) TempDir() string {
	if d.tmp == "" {
		dir, err := os.MkdirTemp("", "ambient-agent-demo-")
		if err != nil {
			d.Fatal(err)
		}
		d.tmp = dir
		d.Cleanup(func() { os.RemoveAll(dir) })
	}
	return d.tmp
}

// recover turns a Fatal into exit code 1; other panics propagate after cleanup.
func (d *demoT) recover(code *int) {
	r := recover()
	if r == nil {
		return
	}
	*code = 1
	if r != errFatal {
		d.runCleanups()
		panic(r)
	}
}

func (d *demoT) runCleanups() {
	for i := len(d.cleanups) - 1; i >= 0; i-- {
		d.cleanups[i]()
	}
	d.cleanups = nil
}
