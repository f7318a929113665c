package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// A copy's body is what its request read, whole, read at its own pace; a copy that falls mirrorBacklog behind
// is abandoned without holding the request back; a request that ends before its body does aborts its copies.
func TestMirrorBodies(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	tee := &teeBody{ReadCloser: io.NopCloser(bytes.NewReader(body))}
	a, b := tee.copy(), tee.copy()
	done := make(chan []byte)
	go func() {
		got, err := io.ReadAll(a)
		if err != nil {
			t.Errorf("copy: %v", err)
		}
		done <- got
	}()
	if got, err := io.ReadAll(tee); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("the request's own body: %d bytes, %v", len(got), err)
	}
	if got := <-done; !bytes.Equal(got, body) {
		t.Errorf("a copy read %d bytes, want the request's %d", len(got), len(body))
	}
	if got, err := io.ReadAll(b); err != nil || !bytes.Equal(got, body) { // read after the request ended
		t.Errorf("a late copy: %d bytes, %v", len(got), err)
	}

	// Too far behind: the request reads on, the copy ends with errMirrorBehind.
	big := bytes.Repeat([]byte{'x'}, mirrorBacklog+1)
	tee = &teeBody{ReadCloser: io.NopCloser(bytes.NewReader(big))}
	slow := tee.copy()
	if n, err := io.Copy(io.Discard, tee); err != nil || n != int64(len(big)) {
		t.Fatalf("the request behind a slow copy: %d, %v", n, err)
	}
	if _, err := io.ReadAll(slow); !errors.Is(err, errMirrorBehind) {
		t.Errorf("a copy %d bytes behind: %v, want errMirrorBehind", len(big), err)
	}

	// The request ends first: the copy has what was read, then errMirrorAborted.
	tee = &teeBody{ReadCloser: io.NopCloser(strings.NewReader("partial body"))}
	cut := tee.copy()
	buf := make([]byte, 7)
	if _, err := io.ReadFull(tee, buf); err != nil {
		t.Fatal(err)
	}
	_ = tee.Close()
	got, err := io.ReadAll(cut)
	if string(got) != "partial" || !errors.Is(err, errMirrorAborted) {
		t.Errorf("a copy of an unfinished body: %q, %v; want \"partial\" and errMirrorAborted", got, err)
	}
	// A copy closed by its transport: the request goes on.
	tee = &teeBody{ReadCloser: io.NopCloser(strings.NewReader("body"))}
	_ = tee.copy().Close()
	if got, err := io.ReadAll(tee); err != nil || string(got) != "body" {
		t.Errorf("the request after its copy closed: %q, %v", got, err)
	}
}

func TestShadowRequestHeaders(t *testing.T) {
	for in, want := range map[string]string{"echo.default:80": "echo.default-shadow:80", "echo": "echo-shadow", "[fd00::1]:80": "[fd00::1-shadow]:80"} {
		if got := shadowHost(in); got != want {
			t.Errorf("shadowHost(%q) = %q, want %q", in, got, want)
		}
	}
	h := http.Header{"Connection": {"keep-alive, X-Private"}, "X-Private": {"1"}, "Upgrade": {"h2c"}, "Te": {"trailers"}, "X-Kept": {"1"}}
	removeHopByHop(h)
	if len(h) != 1 || h.Get("X-Kept") != "1" {
		t.Errorf("after removeHopByHop: %v, want only X-Kept", h)
	}
}
