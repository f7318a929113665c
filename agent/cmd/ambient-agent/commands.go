package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/app"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
)

func runDaemon(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", "run [-config FILE] [-keep-capture] [-supervise]", stderr)
	path := configFlag(fs)
	keep := fs.Bool("keep-capture", false, "leave the capture table in place when the agent exits, so the host stays closed until an agent runs again (the systemd unit's way)")
	supervise := fs.Bool("supervise", false, "run the agent as a worker process under this one, so that a systemd restart or upgrade hands over without dropping a connection (the systemd unit's way; docs/operations.md)")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if *supervise {
		worker := []string{"-config", *path}
		if *keep {
			worker = append(worker, "-keep-capture")
		}
		return app.Supervise(*path, worker, stderr)
	}
	return app.Main(*path, app.RunOptions{KeepCapture: *keep}, stderr)
}

func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("validate", "validate [-config FILE]", stderr)
	path := configFlag(fs)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printLoadError(stderr, err)
		return 1
	}
	var problems []string
	// The policies are part of what a reload applies: check them too.
	if _, _, err := app.LoadPolicies(cfg.Policy); err != nil {
		problems = append(problems, err.Error())
	}
	// The files the agent reads at start: what would stop it is a problem now, what would keep it not ready a
	// warning.
	fileErrs, fileWarnings := fileProblems(cfg)
	problems = append(problems, fileErrs...)
	for _, w := range append(cfg.Warnings(), fileWarnings...) {
		fmt.Fprintf(stderr, "%s: warning: %s\n", *path, w)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(stderr, "%s: %s\n", *path, p)
		}
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

// fileProblems checks the files and directories the configuration names that the agent reads at start, as the
// agent would: a gossip key it could not read stops it (a problem); a certificate directory or istiod's root
// certificate or token directory that is not there keeps it from being ready (a warning).
func fileProblems(cfg *config.Config) (ps, warnings []string) {
	if g := cfg.Gossip; g.Enabled {
		_, err := discovery.ReadKeyFile(g.KeyFile)
		switch {
		case err == nil, g.InsecureDevMode && errors.Is(err, fs.ErrNotExist):
		case errors.Is(err, fs.ErrPermission):
			warnings = append(warnings, fmt.Sprintf("gossip.key_file: %v: not checked as uid %d (the agent reads it as root)", err, os.Getuid()))
		default:
			ps = append(ps, fmt.Sprintf("gossip.key_file: %v (the agent would not start; make one with: ambient-agent gossip keygen)", err))
		}
	}
	needDir := func(key, dir string) {
		if st, err := os.Stat(dir); err != nil {
			warnings = append(warnings, fmt.Sprintf("%s: %v: the agent will not be ready until it is there", key, err))
		} else if !st.IsDir() {
			warnings = append(warnings, fmt.Sprintf("%s: %s is not a directory", key, dir))
		}
	}
	if cfg.Identity.Source == config.SourceFiles && len(cfg.Workloads) > 0 {
		needDir("identity.dir", cfg.Identity.Dir)
	}
	if cfg.Istio.Enabled {
		if _, err := os.Stat(cfg.Istio.RootCert); err != nil {
			warnings = append(warnings, fmt.Sprintf("istio.root_cert: %v: the agent cannot reach istiod without it", err))
		}
		needDir("istio.token_dir", cfg.Istio.TokenDir)
	}
	return ps, warnings
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", "version", stderr)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	fmt.Fprintf(stdout, "ambient-agent %s\n", app.Version)
	return 0
}

// stopWorkersWithin is how long cleanup gives the agent's processes to drain on a stop, within the unit's
// TimeoutStopSec (60s).
const stopWorkersWithin = 50 * time.Second

func runCleanup(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("cleanup", "cleanup [-after-stop UNIT | -force] [-socket PATH]", stderr)
	unit := fs.String("after-stop", "", "the systemd `unit` whose ExecStopPost this is: remove the table only when systemd is stopping the unit (not after a crash, a restart or an upgrade)")
	force := fs.Bool("force", false, "remove the table even while an agent runs (it puts it back: see docs/operations.md)")
	socket := socketFlag(fs)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if *unit == "" && !*force {
		if resp, err := controlClient(*socket, 2*time.Second).Get("http://localhost/healthz/ready"); err == nil {
			resp.Body.Close()
			fmt.Fprintf(stderr, "ambient-agent cleanup: an agent is running (it answers on %s): stop it with systemctl stop ambient-agent, which opens the host, or pass -force\n", *socket)
			return 1
		}
	}
	if *unit != "" {
		// The unit's processes first (KillMode=process leaves them to this): on a stop and at shutdown they
		// drain and exit; after a restart they serve on, and the next start's agent takes over.
		if app.StopsWorkers(context.Background(), *unit) {
			if err := app.StopWorkers(stdout, *unit, stopWorkersWithin); err != nil {
				fmt.Fprintln(stderr, "ambient-agent cleanup: the agent's processes:", err)
			}
		}
		remove, reason := app.AfterStop(context.Background(), *unit)
		fmt.Fprintln(stdout, "ambient-agent cleanup:", reason)
		if !remove {
			return 0
		}
	}
	if err := app.Cleanup(); err != nil {
		return failed(stderr, "cleanup", err)
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

func runClose(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("close", "close [-config FILE] [-saved FILE]", stderr)
	path := configFlag(fs)
	saved := fs.String("saved", app.SavedSpecFile, "the capture spec the agent last installed, used when the configuration does not load")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	cfg, err := config.Load(*path)
	if err != nil {
		// A broken file must not leave the host open at boot: close it as the
		// agent last had it, and still fail, so that the unit shows the problem.
		printLoadError(stderr, err)
		did, serr := app.CloseHostSaved(*saved)
		if serr != nil {
			fmt.Fprintf(stderr, "ambient-agent close: the configuration does not load and %v: the host is NOT closed\n", serr)
			return 1
		}
		fmt.Fprintln(stdout, "ambient-agent close: the configuration does not load;", did)
		return 1
	}
	did, err := app.CloseHost(cfg)
	if err != nil {
		return failed(stderr, "close", err)
	}
	fmt.Fprintln(stdout, "ambient-agent close:", did)
	return 0
}
