package app

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// countingWriter records what reaches the journal and in how many writes.
type countingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return c.buf.Write(p)
}

// Every line arrives, each goroutine's in its order, in far fewer writes than lines; Close leaves nothing behind.
func TestLogWriterLosesNothingAndGathersWrites(t *testing.T) {
	out := &countingWriter{}
	w := newLogWriter(out)
	const goroutines, lines = 8, 2000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(w, "g=%d i=%d\n", g, i)
			}
		})
	}
	wg.Wait()
	w.Close()
	fmt.Fprintf(w, "after close\n")

	got := strings.Split(strings.TrimSuffix(out.buf.String(), "\n"), "\n")
	if len(got) != goroutines*lines+1 || got[len(got)-1] != "after close" {
		t.Fatalf("%d lines reached the writer, want %d and the line after Close last", len(got), goroutines*lines+1)
	}
	next := make([]int, goroutines)
	for _, line := range got[:len(got)-1] {
		var g, i int
		if _, err := fmt.Sscanf(line, "g=%d i=%d", &g, &i); err != nil || i != next[g] {
			t.Fatalf("line %q out of order (want i=%d for g=%d): %v", line, next[g], g, err)
		}
		next[g]++
	}
	if out.writes > goroutines*lines/10 {
		t.Errorf("%d writes for %d lines: they are not gathered", out.writes, goroutines*lines)
	}
}
