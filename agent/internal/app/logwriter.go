package app

import (
	"io"
	"sync"
	"time"
)

// logWriter takes the daemon's log lines off the goroutines that log them: a connection's access-log line at its
// close is appended to a buffer, and one goroutine writes what gathered to the journal (stderr) a few milliseconds
// later, in one write for many lines. Nothing is dropped: a writer that finds the buffer full waits for it to be
// written. An idle agent has no timer running.
type logWriter struct {
	w    io.Writer
	mu   sync.Mutex
	room sync.Cond // signalled when the buffer was written
	buf  []byte
	done bool // closed: lines go straight to w

	kick    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
}

const (
	// logFlushDelay is how long a line may wait for others to share its write.
	logFlushDelay = 5 * time.Millisecond
	// logBufferLimit is the most a buffer holds before writers wait.
	logBufferLimit = 1 << 20
)

func newLogWriter(w io.Writer) *logWriter {
	l := &logWriter{w: w, kick: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	l.room.L = &l.mu
	go l.run()
	return l
}

// Write takes one log record (slog writes each record with one call).
func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	for len(l.buf) > 0 && len(l.buf)+len(p) > logBufferLimit && !l.done {
		l.room.Wait()
	}
	if l.done {
		l.mu.Unlock()
		return l.w.Write(p)
	}
	first := len(l.buf) == 0
	l.buf = append(l.buf, p...)
	l.mu.Unlock()
	if first {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func (l *logWriter) run() {
	defer close(l.stopped)
	t := time.NewTimer(logFlushDelay)
	t.Stop()
	var spare []byte
	for {
		select {
		case <-l.kick:
			t.Reset(logFlushDelay)
			select {
			case <-t.C:
			case <-l.stop:
				l.flush(&spare)
				return
			}
			l.flush(&spare)
		case <-l.stop:
			l.flush(&spare)
			return
		}
	}
}

// flush writes what gathered; spare is the other buffer, reused.
func (l *logWriter) flush(spare *[]byte) {
	l.mu.Lock()
	b := l.buf
	l.buf = (*spare)[:0]
	l.mu.Unlock()
	if len(b) > 0 {
		_, _ = l.w.Write(b) // the journal's own trouble: there is nowhere else to say it
	}
	l.mu.Lock()
	*spare = b[:0]
	l.room.Broadcast()
	l.mu.Unlock()
}

// Close writes what is left; later lines go straight to the writer.
func (l *logWriter) Close() {
	close(l.stop)
	<-l.stopped
	l.mu.Lock()
	l.done = true
	rest := l.buf
	l.buf = nil
	l.room.Broadcast()
	l.mu.Unlock()
	if len(rest) > 0 {
		_, _ = l.w.Write(rest)
	}
}
