package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/app"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/nft"
)

// bugreport gathers what a support request needs into one tar.gz: the agent's own view (status, the
// configuration dump, connections, doctor's checklist, goroutines, metrics), the host's side (the agent's nftables
// tables, policy routing, the journal of the service) and the configuration file. Never a key: the dump holds no
// secret by design, key and token files are not read, and the configuration file names files, it holds none.
// What cannot be collected (the agent is down, a tool is missing) is listed in errors.txt; the report is still
// written.
func runBugreport(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bugreport", "bugreport [-socket PATH] [-config FILE] [-out FILE]", stderr)
	socket := socketFlag(fs)
	path := configFlag(fs)
	out := fs.String("out", "", "write the report to this `file` (default ambient-agent-bugreport-<time>.tar.gz in the current directory)")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if *out == "" {
		*out = "ambient-agent-bugreport-" + time.Now().UTC().Format("20060102T150405Z") + ".tar.gz"
	}
	r := &report{files: map[string][]byte{}}
	r.add("version.txt", []byte("ambient-agent "+app.Version+" (the CLI that wrote this report)\n"), nil)
	for _, c := range []struct{ name, path string }{
		{"config_dump.json", "/config_dump"},
		{"connections.json", "/connections"},
		{"log-level.txt", "/logging"},
		{"goroutines.txt", "/debug/pprof/goroutine?debug=2"},
	} {
		b, err := controlCall(*socket, http.MethodGet, c.path, 15*time.Second)
		r.add(c.name, b, err)
	}
	var buf bytes.Buffer
	runStatus([]string{"-socket", *socket}, &buf, &buf)
	r.add("status.txt", buf.Bytes(), nil)
	buf = bytes.Buffer{}
	runDoctor([]string{"-socket", *socket}, &buf, &buf)
	r.add("doctor.txt", buf.Bytes(), nil)
	if src, err := os.ReadFile(*path); err == nil {
		r.add("config.toml", src, nil)
		if cfg, err := config.Load(*path); err == nil {
			b, err := fetchMetrics(cfg.Admin.MetricsAddress)
			r.add("metrics.txt", b, err)
		} else {
			r.add("config-problems.txt", []byte(err.Error()+"\n"), nil)
		}
	} else {
		r.add("config.toml", nil, err)
	}
	r.command("nft.txt", "nft", "list", "table", "inet", nft.TableName)
	r.command("nft-zone.txt", "nft", "list", "table", "inet", nft.ZoneTableName)
	r.command("ip-rules.txt", "ip", "rule", "show")
	r.command("journal.txt", "journalctl", "-u", "ambient-agent", "--no-pager", "-n", "5000", "-o", "short-iso-precise")
	if err := r.write(*out); err != nil {
		return failed(stderr, "bugreport", err)
	}
	fmt.Fprintf(stdout, "wrote %s (%d files", *out, len(r.files))
	if len(r.errors) > 0 {
		fmt.Fprintf(stdout, "; %d could not be collected: see errors.txt", len(r.errors))
	}
	fmt.Fprintln(stdout, ")")
	return 0
}

type report struct {
	files  map[string][]byte
	order  []string
	errors []string
}

func (r *report) add(name string, b []byte, err error) {
	if err != nil {
		r.errors = append(r.errors, name+": "+err.Error())
		return
	}
	r.files[name] = b
	r.order = append(r.order, name)
}

// command adds what a host command prints; a missing tool or a failure is an error of the report.
func (r *report) command(name, prog string, args ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, prog, args...).CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	r.add(name, out, err)
}

func (r *report) write(path string) (err error) {
	if len(r.errors) > 0 {
		r.add("errors.txt", []byte(strings.Join(r.errors, "\n")+"\n"), nil)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) // it names the host's workloads: not for everyone
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(path) // never leave a truncated report
		}
	}()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	dir := strings.TrimSuffix(filepath.Base(path), ".tar.gz")
	now := time.Now()
	for _, name := range r.order {
		b := r.files[name]
		if err := tw.WriteHeader(&tar.Header{Name: dir + "/" + name, Mode: 0o600, Size: int64(len(b)), ModTime: now}); err != nil {
			f.Close()
			return err
		}
		if _, err := tw.Write(b); err != nil {
			f.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// fetchMetrics scrapes the agent's metrics port (on loopback when it listens on every address).
func fetchMetrics(addr netip.AddrPort) ([]byte, error) {
	if addr.Addr().IsUnspecified() {
		lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
		if addr.Addr().Is6() {
			lo = netip.IPv6Loopback()
		}
		addr = netip.AddrPortFrom(lo, addr.Port())
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 64<<20))
}
