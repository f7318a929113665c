package leak

import (
	"net"
	"testing"
	"time"
)

// fakeT records failures instead of failing the real test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper()               {}
func (f *fakeT) Errorf(string, ...any) { f.failed = true }

// The check must be able to fail: a goroutine or a socket left running is reported, one that ended is not.
func TestCheckCatchesLeaks(t *testing.T) {
	stop := make(chan struct{})
	ft := &fakeT{TB: t}
	verify := Check(ft, Options{Within: 100 * time.Millisecond})
	go func() { <-stop }()
	verify()
	if !ft.failed {
		t.Error("a goroutine left running was not reported")
	}
	close(stop)
	ft = &fakeT{TB: t}
	verify = Check(ft, Options{Within: 100 * time.Millisecond, NoFDs: false})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	verify()
	if !ft.failed {
		t.Error("a listener left open was not reported")
	}
	ln.Close()
	ft = &fakeT{TB: t}
	verify = Check(ft, Options{})
	done := make(chan struct{})
	go func() { close(done) }()
	<-done
	verify()
	if ft.failed {
		t.Error("a goroutine that ended was reported")
	}
}
